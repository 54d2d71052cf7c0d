"""`tunesmith quickstart`: the whole slice on the bundled demo data, with a before/after table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from tunesmith.cli.common import console, print_json
from tunesmith.config import DEFAULT_MODEL


def quickstart(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Base model to fine-tune."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (default TUNESMITH_HOME/runs/<id>)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary instead of tables."),
) -> None:
    """Fine-tune the embedded model to answer customers in a fictional café's voice, and prove it helped.

    Scores the base model on held-out customer messages, trains a LoRA adapter on 200 examples,
    scores it again, and prints the before/after table. Minutes on a laptop CPU; nothing downloaded.
    """
    from tunesmith.cli.evaluate import print_report_table
    from tunesmith.quickstart import run_quickstart

    started = time.perf_counter()

    def show_baseline(report: dict[str, Any]) -> None:
        if not json_output:
            print_report_table(report, title="baseline: the base model on held-out customer messages")

    if not json_output:
        console.rule("[bold]tunesmith quickstart: Bramble & Bean customer replies")
    result = run_quickstart(out, model=model, show_progress=True, on_baseline=show_baseline)
    wall = time.perf_counter() - started
    if json_output:
        print_json({"train": result.train.to_dict(), "report": result.report, "wall_seconds": round(wall, 1)})
        return
    print_report_table(result.report, title="before / after on held-out examples")
    train = result.train
    console.print(
        f"trained {train.trained_tokens:,} tokens in {train.wall_seconds:.0f}s "
        f"({train.tokens_per_second:.0f} tok/s, {train.precision}); quickstart took {wall:.0f}s"
    )
    console.print(f"run folder:  {train.run_dir}")
    console.print(f"loss curve:  {Path(train.run_dir) / 'loss_curve.png'}")
    console.print(f"predictions: {result.eval_dir / 'predictions.jsonl'}")
