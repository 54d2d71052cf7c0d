"""Where a study lives and how it survives being killed: optuna storage, study, budget and recovery.

Owns: opening the storage (a journal file in the study folder by default, shared by this machine's
workers and by machines that mount the folder; or an RDB URL such as PostgreSQL, with optuna's heartbeat
so a trial whose machine died is failed), creating or loading the study with its seeded sampler and
pruner, counting what the budget has spent, and finding trials left RUNNING by a killed worker of this
machine (its process is gone) to fail them and queue their hyperparameters again. No torch. Does not own:
what a trial runs (`tunesmith.tune.trial`) or the workers (`tunesmith.tune.study`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import optuna
import psutil
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from tunesmith.config import ConfigError
from tunesmith.config.tune import TuneSpec
from tunesmith.tune.space import grid

JOURNAL_FILE = "journal.log"
HEARTBEAT_SECONDS = 60  # RDB storage: a trial not heard from for three of these is failed and queued again
MEDIAN_STARTUP_TRIALS = (
    3  # the median pruner waits for this many finished trials, and for a second validation
)

# A new pruner of each kind (hyperband keeps per-study state: one per study). Steps are validations.
PRUNERS: dict[str, Callable[[], optuna.pruners.BasePruner]] = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=2),
    "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3),
    "none": optuna.pruners.NopPruner,
}


def open_storage(url: str | None, study_dir: Path) -> BaseStorage:
    """The study's storage: the journal file in `study_dir` (url None), else the RDB at `url`."""
    if url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        path = str(study_dir / JOURNAL_FILE)
        # The open()-based lock works where symlinks do not (some network file systems).
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    if not url.startswith(("sqlite", "postgresql", "postgres", "mysql")):
        raise ConfigError(f"storage {url!r}: expected a postgresql://, mysql:// or sqlite:// URL")
    try:
        return RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=3 * HEARTBEAT_SECONDS,
            failed_trial_callback=queue_again,
        )
    except Exception as error:  # a URL that does not connect: say which, without a traceback
        raise ConfigError(f"storage {_redacted(url)}: cannot open it: {error}") from error


def load_study(spec: TuneSpec, name: str, storage: BaseStorage, worker: int) -> optuna.Study:
    """The study `name` in `storage`, created if new; worker `worker` samples with seed + worker."""
    direction: Literal["minimize", "maximize"] = "minimize" if spec.objective == "val_loss" else "maximize"
    sampler: optuna.samplers.BaseSampler
    if spec.sampler == "grid":
        sampler = optuna.samplers.GridSampler(grid(spec.search), seed=spec.seed + worker)
    elif spec.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=spec.seed + worker)
    else:  # constant_liar: parallel workers do not all propose next to the same running trial
        sampler = optuna.samplers.TPESampler(seed=spec.seed + worker, constant_liar=spec.workers > 1)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        pruner=PRUNERS[spec.pruner](),
        direction=direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study {name!r} exists with direction {study.direction.name.lower()}; objective {spec.objective} "
            f"needs {direction}: give another --study"
        )
    return study


def worker_identity() -> dict[str, Any]:
    """This process, as recorded on the trials it runs: host, pid and start time (pids are reused)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": psutil.Process().create_time()}


def is_alive(worker: dict[str, Any]) -> bool:
    """Whether the process `worker_identity` described still runs (on another host: assumed so)."""
    if worker.get("host") != socket.gethostname():
        return True
    try:
        return bool(psutil.Process(int(worker["pid"])).create_time() == worker["started"])
    except psutil.NoSuchProcess:
        return False


def interrupted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Trials left RUNNING by a worker of this machine that no longer runs (killed)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return [
        trial
        for trial in running
        if "worker" in trial.user_attrs and not is_alive(trial.user_attrs["worker"])
    ]


def fail_and_queue_again(study: optuna.Study, trial: FrozenTrial) -> None:
    """Mark an interrupted trial failed and queue its hyperparameters for another trial."""
    study.tell(trial.number, state=TrialState.FAIL)
    queue_again(study, trial)


def queue_again(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue `trial`'s hyperparameters as a new trial (also RDB storage's heartbeat callback)."""
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def spent(study: optuna.Study) -> int:
    """Trials that count against the budget: finished (complete, pruned, failed but not run again) and
    running; a trial failed by a kill and queued again counts once, as its rerun."""
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs["retry_of"] for trial in trials if "retry_of" in trial.user_attrs}
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
    return sum(1 for trial in trials if trial.state in counted and trial.number not in retried)


def _redacted(url: str) -> str:
    scheme, separator, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}{separator}***@{rest.rpartition('@')[2]}"
