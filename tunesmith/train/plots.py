"""Loss-curve plot from a run's metric lines. Matplotlib with the file-only Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def plot_loss_curve(metrics: list[dict[str, Any]], path: Path, title: str) -> None:
    """Train loss per logged step and validation loss per evaluation, on one axis."""
    train = [(record["step"], record["train_loss"]) for record in metrics if "train_loss" in record]
    val = [(record["step"], record["val_loss"]) for record in metrics if "val_loss" in record]
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        axis.plot(*zip(*train, strict=True), label="train loss", color="#1f77b4", linewidth=1.5)
    if val:
        axis.plot(*zip(*val, strict=True), label="val loss", color="#d62728", marker="o", linewidth=1.5)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy (assistant tokens)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temporary)
    plt.close(figure)
    temporary.replace(path)
