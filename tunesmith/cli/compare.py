"""`tunesmith compare A B ...`: any runs, adapters, models and baselines, side by side with confidence."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tunesmith.cli.common import UsageError, console, print_json
from tunesmith.cli.evaluate import _eval_spec, maybe_run, print_report_table, run_evaluation
from tunesmith.config import DEFAULT_MODEL, DataFormat, EvalTask

if TYPE_CHECKING:
    from tunesmith.eval.evaluate import Candidate


def compare(
    items: list[str] = typer.Argument(
        ...,
        help="What to compare, in order (each later one is tested against each earlier one): 'zero-shot' "
        "or 'few-shot' (the base model as a baseline), a run id or folder, an adapter folder, or a model.",
    ),
    data: Path | None = typer.Option(None, "--data", help="Test file or prepared dataset folder."),
    base: str | None = typer.Option(
        None, "--base", help="Base model for baselines and adapters (default: the first run's base)."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file with an `eval:` section."),
    train_data: Path | None = typer.Option(
        None, "--train-data", help="Few-shot pool and label set (default: the first run's training data)."
    ),
    task: EvalTask | None = typer.Option(
        None, "--task", help="Task type; detected from the data when unset."
    ),
    metric: list[str] | None = typer.Option(None, "--metric", help="Metric to compute (repeatable)."),
    shots: int | None = typer.Option(None, "--shots", help="Demonstrations in 'few-shot' (default 5)."),
    out: Path = typer.Option(Path("compare"), "--out", "-o", help="Report folder."),
    data_format: DataFormat | None = typer.Option(
        None, "--format", help="Example form; detected when unset."
    ),
    max_new_tokens: int | None = typer.Option(None, "--max-new-tokens", help="Longest generated answer."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Prompts generated or scored together."),
    limit: int | None = typer.Option(None, "--limit", help="Only the first N examples."),
    judge_model: str | None = typer.Option(
        None, "--judge-model", help="LLM judge (local model or endpoint id)."
    ),
    judge_url: str | None = typer.Option(
        None, "--judge-url", help="OpenAI-compatible endpoint of the judge."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print report.json to stdout."),
) -> None:
    """Score every item on the same examples; each metric with its 95% bootstrap interval, and each
    later item against each earlier one: paired difference, its interval, p-value and a verdict
    (better / worse / no significant difference). Writes the same report files as `tunesmith eval`.
    """
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    spec = _eval_spec(config, data, train_data, task, metric, shots, False, data_format,
                      max_new_tokens, batch_size, limit, judge_model, judge_url)  # fmt: skip
    registry = Registry(default_database_url()).connect()
    runs = {item: maybe_run(item, registry) for item in items if item not in ("zero-shot", "few-shot")}
    first_run = next((run for run in runs.values() if run is not None), None)
    base_model = base or (first_run["base_model"] if first_run else DEFAULT_MODEL)
    pool = spec.train_data or (first_run["train_data"] if first_run else None)
    candidates = [_candidate(item, runs.get(item), spec.shots, pool is not None) for item in items]
    report = run_evaluation(spec, base_model, candidates, out, pool)
    registry.record_evaluation(first_run["run_id"] if first_run else None, report, out)
    if json_output:
        print_json(report)
        return
    print_report_table(
        report, title=f"comparison on {spec.data.name} ({report['data']['examples']} examples)"
    )
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'}")


def _candidate(item: str, run: dict[str, object] | None, shots: int, has_pool: bool) -> Candidate:
    from tunesmith.eval.evaluate import Candidate

    if item == "zero-shot":
        return Candidate("base zero-shot", shots=0)
    if item == "few-shot":
        if not has_pool:
            raise UsageError("'few-shot' needs training data to draw demonstrations from: pass --train-data")
        return Candidate(f"base {shots}-shot", shots=shots)
    if run is not None:
        candidate = run["candidate"]
        assert isinstance(candidate, Candidate)
        return candidate
    path = Path(item)
    if (path / "adapter_config.json").is_file():
        return Candidate(path.name, adapter_dir=path)
    return Candidate(path.name if path.is_dir() else item, model=item)
