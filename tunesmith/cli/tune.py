"""`tunesmith tune`: a hyperparameter study on optuna, from a tune file and a few flags."""

from __future__ import annotations

from pathlib import Path

import typer

from tunesmith.cli.common import console, err_console, print_json
from tunesmith.cli.options import Flag, parse_duration


def tune(
    config: Path = typer.Option(
        ..., "--config", "-c", help="Tune file: search:, train: or base:, objective, pruner, budget."
    ),
    trials: int | None = typer.Option(
        None, "--trials", help="Trials the study finishes in all (resumed ones count)."
    ),
    time_budget: str | None = typer.Option(
        None,
        "--time-budget",
        metavar="DURATION",
        help="Start no trial after this long (2h, 90m); running ones finish.",
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        help="Trials at once on this machine, one process each (a share of the CPU threads each).",
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Study storage shared by machines: postgresql://user:password@host/db; default a journal file in the "
        "study folder. sqlite:// only with one worker.",
    ),
    study: str | None = typer.Option(None, "--study", help="Study name (default: the tune file's name)."),
    seed: int | None = typer.Option(
        None, "--seed", help="Sampler seed; give each machine of a shared study its own."
    ),
    json_output: bool = typer.Option(
        False, "--json", help="Print the study's result as one JSON object on stdout."
    ),
) -> None:
    """Search hyperparameters (learning rate, LoRA rank/alpha/dropout, epochs, batch size, tuning) with optuna.

    Every trial is a training run recorded in the registry and linked to the study; unpromising trials
    are pruned at a validation. Running it again resumes the study (trials a kill interrupted run again).
    Writes best.yaml (train it with `tunesmith train --config`), importance.json and report.html into
    the study folder.

    Examples:
      tunesmith tune --config configs/tune.yaml --trials 20
      tunesmith tune --config tune.yaml --time-budget 2h --workers 2
      tunesmith tune --config tune.yaml --storage postgresql://tune:secret@db/studies   # on every machine
    """
    from tunesmith.tune import load_tune_file, run_study

    budget = parse_duration(Flag("time_budget"), time_budget) if time_budget is not None else None
    flags = {"trials": trials, "time_budget": budget, "workers": workers, "storage": storage, "study": study,
             "seed": seed}  # fmt: skip
    spec = load_tune_file(config, flags)
    result = run_study(spec, progress=True)
    if json_output:
        print_json(result.to_dict())
        return
    counts = ", ".join(f"{count} {state}" for state, count in result.trials.items() if count)
    console.print(f"[bold green]study {result.study}[/]: {counts}")
    if result.best_value is None:
        console.print("no trial completed; see the report")
    else:
        params = ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                           for name, value in result.best_params.items())  # fmt: skip
        console.print(
            f"best {result.objective} {result.best_value:.6g}: trial {result.best_trial} "
            f"(run {result.best_run_id}), {params}"
        )
    if result.importance:
        console.print(
            "importance: " + ", ".join(f"{name} {value:.2f}" for name, value in result.importance.items())
        )
    console.print(f"report: {result.report}")
    if result.best_config is not None:
        err_console.print(f"next: tunesmith train --config {result.best_config}")
