"""`tunesmith eval`: score a fine-tuned run against its base model on a held-out file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from tunesmith.cli.common import console, print_json
from tunesmith.config import ConfigError, DataFormat

if TYPE_CHECKING:
    from tunesmith.registry.store import Registry


def evaluate(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="A run (folder or id): scores its base and adapter side by side. "
        "Or a base model (catalog name, hub id, directory): scores it alone.",
    ),
    data: Path = typer.Option(
        ..., "--data", help="Test file; each example's last assistant turn is the reference."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report folder (default: <run>/eval, else ./eval)."
    ),
    data_format: DataFormat | None = typer.Option(
        None, "--format", help="Example form; detected when unset."
    ),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", help="Longest generated answer."),
    batch_size: int = typer.Option(16, "--batch-size", help="Prompts generated together."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N examples."),
    json_output: bool = typer.Option(False, "--json", help="Print report.json to stdout."),
) -> None:
    """Generate (greedy, batched) on a test file and score ROUGE-L, BLEU and exact match.

    Writes report.json, report.md and predictions.jsonl (prompt, prediction and reference per example
    and model) and records the evaluation in the registry.
    """
    from tunesmith.config import default_database_url  # noqa: PLC0415
    from tunesmith.eval.evaluate import Candidate, evaluate_generation  # noqa: PLC0415
    from tunesmith.registry.store import Registry  # noqa: PLC0415

    registry = Registry(default_database_url()).connect()
    run_dir = _maybe_run_dir(model, registry)
    run_id: str | None = None
    if run_dir is not None:
        summary = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        run_id, base = summary["run_id"], summary["base_model"]
        artifact = Path(summary["artifact_dir"])
        if summary["method"] == "lora":
            candidates = [Candidate("base"), Candidate(run_id, artifact)]
            report = evaluate_generation(
                base,
                candidates,
                data,
                out or run_dir / "eval",
                data_format=data_format,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                limit=limit,
            )
        else:
            report = _evaluate_full(
                base,
                artifact,
                run_id,
                data,
                out or run_dir / "eval",
                data_format,
                max_new_tokens,
                batch_size,
                limit,
            )
    else:
        report = evaluate_generation(
            model,
            [Candidate(model)],
            data,
            out or Path("eval"),
            data_format=data_format,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            limit=limit,
        )
    out_dir = out or (run_dir / "eval" if run_dir else Path("eval"))
    registry.record_evaluation(run_id, report, out_dir)
    if json_output:
        print_json(report)
        return
    print_report_table(report, title=f"evaluation on {data.name} ({report['data']['examples']} examples)")
    console.print(f"report: {out_dir / 'report.md'}")


def _maybe_run_dir(model: str, registry: Registry) -> Path | None:
    """The run folder `model` names, or None when it names a base model instead."""
    try:
        run_dir = registry.find_run_dir(model)
    except ConfigError:
        return None
    if not (run_dir / "run.json").is_file():
        raise typer.BadParameter(
            f"run {model} has not finished (no run.json); resume it first", param_hint="--model"
        )
    return run_dir


def _evaluate_full(
    base: str,
    model_dir: Path,
    run_id: str,
    data: Path,
    out: Path,
    data_format: DataFormat | None,
    max_new_tokens: int,
    batch_size: int,
    limit: int | None,
) -> dict[str, object]:
    """A fully fine-tuned run is its own model: score base and it one after the other, then combine."""
    from tunesmith.eval.evaluate import Candidate, combine_reports, evaluate_generation  # noqa: PLC0415

    settings = {
        "data_format": data_format,
        "max_new_tokens": max_new_tokens,
        "batch_size": batch_size,
        "limit": limit,
    }
    evaluate_generation(base, [Candidate("base")], data, out / "base", **settings)  # type: ignore[arg-type]
    evaluate_generation(str(model_dir), [Candidate(run_id)], data, out / run_id, **settings)  # type: ignore[arg-type]
    return combine_reports([out / "base", out / run_id], out)


def print_report_table(report: dict[str, object], title: str) -> None:
    """Models as rows, metrics as columns; the best value per metric in bold."""
    models = report["models"]
    assert isinstance(models, list)
    names = list(models[0]["metrics"])
    best = {name: max(m["metrics"][name]["value"] for m in models) for name in names}
    table = Table(title=title)
    table.add_column("model")
    for name in names:
        table.add_column(name, justify="right")
    for entry in models:
        cells = []
        for name in names:
            value = entry["metrics"][name]["value"]
            text = f"{value:.2f}" if name == "bleu" else f"{value:.3f}"
            cells.append(f"[bold]{text}[/]" if value == best[name] and len(models) > 1 else text)
        table.add_row(entry["name"], *cells)
    console.print(table)
