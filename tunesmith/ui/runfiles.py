"""What a run page reads from a run's folder, and the comparison of run configs. No torch.

Owns: the curves in `metrics.jsonl` (train loss, validation loss and scores, learning rate, by step),
the step plan in `plan.json`, and flattening configs to dotted keys for a diff. Does not own: the
folder's layout or its writing (`train.rundir`); a missing or unreadable file is shown as absent, since
run folders can be moved or deleted after the registry recorded them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.train.rundir import RunDir


def read_metric_lines(run_dir: str, run_id: str) -> list[dict[str, Any]]:
    """The run's metric lines, oldest first; [] when the folder or file is gone."""
    try:
        return RunDir(Path(run_dir), run_id).read_metrics()
    except (OSError, ValueError):
        return []


def curve(lines: list[dict[str, Any]], name: str) -> list[tuple[float, float]]:
    """(step, value) for every line that has `name`."""
    return [
        (float(line["step"]), float(line[name])) for line in lines if isinstance(line.get(name), int | float)
    ]


def validation_table(lines: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """The validation lines (those with `val_loss`): their metric names and the lines, in step order."""
    rows = [line for line in lines if "val_loss" in line]
    names = sorted({key for line in rows for key in line if key.startswith("val_")})
    return names, rows


def read_plan(run_dir: str) -> dict[str, Any] | None:
    """`plan.json` (how each optimizer step was laid out), or None."""
    try:
        plan: dict[str, Any] = json.loads((Path(run_dir) / "plan.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return plan


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"lora": {"r": 8}}` → `{"lora.r": 8}`; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_diff(configs: list[dict[str, Any]]) -> list[tuple[str, list[Any], bool]]:
    """Every dotted key in any config: (key, its value per config (None where absent), whether they differ)."""
    flat = [flatten(config) for config in configs]
    keys = sorted({key for one in flat for key in one})
    rows = []
    for key in keys:
        values = [one.get(key) for one in flat]
        rows.append((key, values, any(value != values[0] for value in values)))
    return rows
