"""`run_study(spec)`: a hyperparameter study from a tune file to its best config and report.

Owns: reading a tune file (the base training config resolved and validated once), the study folder,
recovering trials a killed run left behind, the budget (trials, the study's total; wall time, this
invocation's), the workers (this process for one; else one process each, forked, each limited to its
share of CPU threads, all sharing the storage) and the progress bar, and the summary (`StudyResult`).
Does not own: a trial (`tunesmith.tune.trial`), storage details (`tunesmith.tune.storage`), the report
(`tunesmith.tune.report`).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunesmith.config import (
    ConfigError,
    TrainSpec,
    build_spec,
    default_database_url,
    format_validation_error,
    load_config_file,
    tunesmith_home,
)
from tunesmith.config.tune import TuneSpec
from tunesmith.registry.store import Registry
from tunesmith.tune.report import StudyReport, write_report
from tunesmith.tune.storage import (
    fail_and_queue_again,
    interrupted_trials,
    load_study,
    open_storage,
    queue_again,
    spent,
)
from tunesmith.tune.trial import TrialSetup, run_trial, trial_setup


@dataclass(frozen=True)
class StudyResult:
    """What a study found, as `tunesmith tune --json` prints it."""

    study: str
    study_dir: str
    objective: str
    direction: str  # minimize (val_loss) or maximize (a task metric)
    trials: dict[str, int]  # count by state: complete, pruned, fail, running, waiting
    best_value: float | None
    best_params: dict[str, Any]
    best_trial: int | None
    best_run_id: str | None
    best_config: str | None  # a YAML with a `train:` section, ready for `tunesmith train --config`
    importance: dict[str, float]  # hyperparameter -> share of the score's variation it explains
    report: str  # report.html

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_tune_file(path: Path, flags: dict[str, Any]) -> TuneSpec:
    """A tune file merged with flags (`trials`, `workers` ...; None: not given); `base` resolved against
    the file's folder, the study named after the file unless it says. Errors name the key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the tune file: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: expected a mapping with search: and train: or base:, got {type(raw).__name__}"
        )
    merged = raw | {key: value for key, value in flags.items() if value is not None}
    try:
        spec = TuneSpec.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(f"{path}:\n{format_validation_error(error, source='tune')}") from error
    updates: dict[str, Any] = {"study": spec.study or path.stem}
    if spec.base is not None and not spec.base.is_absolute():
        updates["base"] = path.parent / spec.base
    return spec.model_copy(update=updates)


def base_section(spec: TuneSpec) -> dict[str, Any]:
    """The `train:` section every trial starts from: base's with train's keys over it, validated."""
    section: dict[str, Any] = {}
    if spec.base is not None:
        section = dict(load_config_file(spec.base).train or {})
        if not section:
            raise ConfigError(f"tune.base: {spec.base} has no train: section")
    section |= spec.train or {}
    train = build_spec(TrainSpec, section, {})
    if train.val_data is None and not train.hold_out_val and not _is_prepared(train.data):
        raise ConfigError("train.hold_out_val: a study scores trials on validation data; give val_data")
    if spec.objective != "val_loss" and train.method != "sft":
        raise ConfigError(
            f"tune.objective: {spec.objective} is scored during sft; method {train.method} has val_loss"
        )
    return section


def study_folder(spec: TuneSpec) -> Path:
    assert spec.study is not None
    return spec.out or tunesmith_home() / "studies" / spec.study


def run_study(spec: TuneSpec, *, progress: bool = True) -> StudyResult:
    """Run `spec`'s study to its budget (resuming it when it exists) and write its best config and report.

    `spec` comes from `load_tune_file` (its study named). Trials a killed worker of this machine left
    running are failed and their hyperparameters queued again first.
    """
    assert spec.study is not None
    deadline = time.time() + spec.time_budget if spec.time_budget is not None else None
    study_dir = study_folder(spec)
    base = base_section(spec)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the progress bar and the report say what happened
    registry = Registry(default_database_url()).connect()
    study = load_study(spec, spec.study, open_storage(spec.storage, study_dir), worker=0)
    for trial in interrupted_trials(study):
        fail_and_queue_again(study, trial)
        if "run_id" in trial.user_attrs:  # the run stopped with its worker: failed, rerun as a new trial
            run_id = trial.user_attrs["run_id"]
            message = f"killed while running trial {trial.number} of study {spec.study}; queued to run again"
            registry.record_event(
                run_id, "failed", message, {}, datetime.now(UTC).isoformat(timespec="milliseconds")
            )
            registry.record_trial(run_id, spec.study, trial.number, "failed", None)
    setup = trial_setup(spec, spec.study, study_dir, base)
    with _StudyProgress(spec, study, enabled=progress) as bar:
        if spec.workers == 1:
            work(study, setup, registry, spec.trials, deadline, after_trial=bar.update)
        else:
            _run_workers(spec, setup, deadline, bar)
    report = write_report(study, study_dir, spec.objective)
    return _result(spec, study, study_dir, report)


def work(
    study: optuna.Study,
    setup: TrialSetup,
    registry: Registry,
    trials: int | None,
    deadline: float | None,
    after_trial: Callable[[], None],
) -> None:
    """Run trials one after another until the study has `trials` or `deadline` (time.time()) passed.

    A trial that fails at run time (RuntimeError, e.g. out of memory) is recorded failed and the study
    goes on; any other error (bad data, bad config) would fail every trial, so it stops the study. Ctrl-C
    queues the interrupted trial's hyperparameters again (a resumed study reruns it).
    """
    running: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        running[:] = [trial.number]
        return run_trial(trial, setup, registry)

    while (trials is None or spent(study) < trials) and (deadline is None or time.time() < deadline):
        try:
            study.optimize(objective, n_trials=1, catch=(RuntimeError,), gc_after_trial=True)
        except KeyboardInterrupt:
            if running:
                queue_again(study, study.get_trials(deepcopy=False)[running[0]])
            raise
        after_trial()


def _work_in_process(
    spec_json: dict[str, Any], setup: TrialSetup, deadline: float | None, worker: int, threads: int
) -> None:
    """A worker process: `threads` CPU threads, its own storage handle and registry connection."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    spec = TuneSpec.model_validate(spec_json)
    assert spec.study is not None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    registry = Registry(default_database_url()).connect()
    study = load_study(spec, spec.study, open_storage(spec.storage, setup.study_dir), worker=worker)
    try:
        work(study, setup, registry, spec.trials, deadline, after_trial=lambda: None)
    except Exception as error:  # the parent reports it: one line, no traceback
        (setup.study_dir / "workers").mkdir(parents=True, exist_ok=True)
        (setup.study_dir / "workers" / f"{worker}.error").write_text(f"{type(error).__name__}: {error}")
        raise SystemExit(1) from error


def _run_workers(spec: TuneSpec, setup: TrialSetup, deadline: float | None, bar: _StudyProgress) -> None:
    """`spec.workers` processes sharing the study; the bar follows the storage until they end."""
    threads = max(1, (os.cpu_count() or 1) // spec.workers)
    # fork: a worker starts from what this process imported, at once (spawn imports torch again in each,
    # seconds to minutes on a loaded machine). Safe here: this process runs no trial, so no CUDA context
    # or OpenMP pool is inherited, and each worker opens its own storage and registry connections.
    context = multiprocessing.get_context("fork")
    spec_json = spec.model_dump(mode="json")
    processes = [
        context.Process(target=_work_in_process, args=(spec_json, setup, deadline, worker, threads))
        for worker in range(spec.workers)
    ]
    for process in processes:
        process.start()
    try:
        while any(process.is_alive() for process in processes):
            time.sleep(0.5)
            bar.update()
    finally:
        for process in processes:  # after Ctrl-C: the workers queue their trials again and stop
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    errors = sorted((setup.study_dir / "workers").glob("*.error"))
    if errors:
        messages = {path.read_text(encoding="utf-8") for path in errors}
        for path in errors:
            path.unlink()
        raise ConfigError("a worker stopped the study: " + "; ".join(sorted(messages)))
    failed = [process.exitcode for process in processes if process.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} worker(s) exited with codes {failed}")


class _StudyProgress:
    """A rich progress bar of finished trials, with the best score so far, read from the storage."""

    def __init__(self, spec: TuneSpec, study: optuna.Study, *, enabled: bool) -> None:
        self.study = study
        self.enabled = enabled
        self.progress = Progress(
            TextColumn(f"study {spec.study}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
            TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled,
        )  # fmt: skip
        self.task = self.progress.add_task("trials", total=spec.trials, best="")

    def __enter__(self) -> _StudyProgress:
        self.progress.start()
        self.update()
        return self

    def __exit__(self, *exc: object) -> None:
        self.update()
        self.progress.stop()

    def update(self) -> None:
        if not self.enabled:
            return
        trials = self.study.get_trials(deepcopy=False)
        done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
        text = ""
        if any(trial.state == TrialState.COMPLETE for trial in trials):
            best = self.study.best_trial
            text = f"best {best.value:.4f} (trial {best.number})"
        self.progress.update(self.task, completed=len(done), best=text)


def _result(spec: TuneSpec, study: optuna.Study, study_dir: Path, report: StudyReport) -> StudyResult:
    assert spec.study is not None
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(1 for t in trials if t.state == state) for state in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    return StudyResult(
        study=spec.study,
        study_dir=str(study_dir),
        objective=spec.objective,
        direction=study.direction.name.lower(),
        trials=counts,
        best_value=best.value if best is not None else None,
        best_params=best.params if best is not None else {},
        best_trial=best.number if best is not None else None,
        best_run_id=best.user_attrs.get("run_id") if best is not None else None,
        best_config=str(report.best_config) if report.best_config is not None else None,
        importance=report.importance,
        report=str(report.html),
    )


def _is_prepared(path: Path) -> bool:
    from tunesmith.data.ingest import is_prepared_dataset

    return is_prepared_dataset(path)
