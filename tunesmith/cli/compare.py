"""`tunesmith compare A B ...`: any runs, adapters, models and baselines, side by side with confidence."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from tunesmith.cli.common import UsageError
from tunesmith.cli.evaluate import maybe_run, print_report, run_evaluation
from tunesmith.cli.options import COMPARE_FLAGS, spec_flags
from tunesmith.config import DEFAULT_MODEL, EvalSpec, build_spec, load_config_file

if TYPE_CHECKING:
    from tunesmith.eval.evaluate import Candidate


@spec_flags(EvalSpec, COMPARE_FLAGS)
def compare(
    items: list[str] = typer.Argument(
        ...,
        help="What to compare, in order (each later one is tested against each earlier one): 'zero-shot' "
        "or 'few-shot' (the base model as a baseline), a run id or folder, an adapter folder, or a model.",
    ),
    base: str | None = typer.Option(
        None, "--base", help="Base model for baselines and adapters (default: the first run's base)."
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file with an `eval:` section."),
    out: Path = typer.Option(Path("compare"), "--out", "-o", help="Report folder."),
    json_output: bool = typer.Option(False, "--json", help="Print report.json to stdout."),
    *,
    flags: dict[str, Any],
) -> None:
    """Score every item on the same examples; each metric with its 95% bootstrap interval, and each
    later item against each earlier one: paired difference, its interval, p-value and a verdict
    (better / worse / no significant difference). Writes the same report files as `tunesmith eval`.
    """
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    spec = build_spec(EvalSpec, load_config_file(config).eval if config else None, flags)
    registry = Registry(default_database_url()).connect()
    runs = {item: maybe_run(item, registry) for item in items if item not in ("zero-shot", "few-shot")}
    first_run = next((run for run in runs.values() if run is not None), None)
    base_model = base or (first_run["base_model"] if first_run else DEFAULT_MODEL)
    pool = spec.train_data or (first_run["train_data"] if first_run else None)
    candidates = [_candidate(item, runs.get(item), spec.shots, pool is not None) for item in items]
    report = run_evaluation(spec, base_model, candidates, out, pool)
    registry.record_evaluation(first_run["run_id"] if first_run else None, report, out)
    print_report(report, out, f"comparison on {spec.data.name}", json_output)


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
