"""The run directory: typed events, metrics lines, atomic file writes. No torch.

Owns: the layout of a run folder (`config.yaml`, `events.jsonl`, `metrics.jsonl`, `run.json`,
`checkpoints/`, `adapter/` or `model/`, `loss_curve.png`) and the event record, modelled on OpenAI's
fine-tuning job events; opening a run (`open_run`) and recording how it ended (`recording_outcome`),
for every objective alike. Does not own: the registry; a listener passed in mirrors events there.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml


class RunStatus(StrEnum):
    """Lifecycle of a training run."""

    created = "created"  # folder and config written, nothing loaded yet
    validating_data = "validating_data"  # reading and rendering the data
    running = "running"  # optimizer steps in progress
    succeeded = "succeeded"  # finished; adapter or model saved
    failed = "failed"  # stopped by an error; see the last event
    cancelled = "cancelled"  # stopped by the user (Ctrl-C); resumable from the last checkpoint


class EventType(StrEnum):
    created = "created"
    validating_data = "validating_data"
    running = "running"
    resumed = "resumed"
    metrics = "metrics"
    checkpoint = "checkpoint"
    early_stopped = "early_stopped"
    pruned = "pruned"  # a hyperparameter study stopped the run at a validation (its trial was pruned)
    budget_reached = "budget_reached"
    warning = "warning"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


@dataclass(frozen=True)
class RunEvent:
    run_id: str
    type: EventType
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    def to_json(self) -> str:
        record = asdict(self)
        record["type"] = self.type.value
        return json.dumps(record, ensure_ascii=False)


EventListener = Callable[[RunEvent], None]


def new_run_id() -> str:
    """Sortable and unique: `run-20261123-182501-3fa9`."""
    return f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class RunDir:
    """A run's folder. Appends are line-atomic; whole files are written atomically.

    `writes` False: a view for the other processes of a multi-process run, which read the folder (its
    checkpoints, plan.json) and write nothing; process 0 writes it.
    """

    def __init__(
        self, path: Path, run_id: str, listener: EventListener | None = None, *, writes: bool = True
    ) -> None:
        self.path = path
        self.run_id = run_id
        self.listener = listener
        self.writes = writes

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def checkpoints_path(self) -> Path:
        return self.path / "checkpoints"

    def emit(self, type_: EventType, message: str, **data: Any) -> RunEvent:
        event = RunEvent(run_id=self.run_id, type=type_, message=message, data=data)
        if not self.writes:
            return event
        _append_line(self.events_path, event.to_json())
        if self.listener is not None:
            self.listener(event)
        return event

    def log_metrics(self, record: dict[str, Any]) -> None:
        if self.writes:
            _append_line(self.metrics_path, json.dumps(record))

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.is_file():
            return []
        return [
            json.loads(line) for line in self.metrics_path.read_text(encoding="utf-8").splitlines() if line
        ]

    def truncate_metrics(self, through_step: int) -> None:
        """Drop metric lines after `through_step` (written after the checkpoint a resume starts from)."""
        kept = [record for record in self.read_metrics() if record["step"] <= through_step]
        if self.writes:
            atomic_write_text(self.metrics_path, "".join(json.dumps(record) + "\n" for record in kept))

    def write_json(self, name: str, payload: dict[str, Any]) -> None:
        if self.writes:
            atomic_write_text(self.path / name, json.dumps(payload, indent=2, default=str) + "\n")

    def write_status(self, status: RunStatus, error: str | None = None) -> None:
        """`status.json`: what `tunesmith runs` and `--resume` read first."""
        self.write_json("status.json", {"run_id": self.run_id, "status": status.value, "error": error})

    def read_json(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads((self.path / name).read_text(encoding="utf-8"))
        return result


def open_run(
    config: dict[str, Any],
    *,
    out: Path | None,
    runs_root: Path,
    resume: Path | None,
    listener: EventListener | None,
) -> RunDir:
    """The run folder `resume`, or a new one (at `out`, else under `runs_root`) for the training spec `config`."""
    if resume is not None:
        status = resume / "status.json"
        if not status.is_file():
            raise FileNotFoundError(f"{resume}: not a tunesmith run folder (no status.json)")
        return RunDir(resume, str(json.loads(status.read_text(encoding="utf-8"))["run_id"]), listener)
    run_id = new_run_id()
    run = RunDir(out or runs_root / run_id, run_id, listener)
    run.path.mkdir(parents=True, exist_ok=True)
    (run.path / "config.yaml").write_text(yaml.safe_dump({"train": config}))
    run.emit(EventType.created, f"run {run_id} created in {run.path}", config=config, run_dir=str(run.path))
    run.write_status(RunStatus.created)
    return run


@contextmanager
def recording_outcome(run: RunDir) -> Iterator[None]:
    """Record Ctrl-C as `cancelled` (resumable) and any error as `failed`, then re-raise."""
    try:
        yield
    except KeyboardInterrupt:
        run.emit(EventType.cancelled, "cancelled by the user; resume with `tunesmith train --resume`")
        run.write_status(RunStatus.cancelled)
        raise
    except Exception as error:
        run.emit(EventType.failed, f"{type(error).__name__}: {error}")
        run.write_status(RunStatus.failed, error=str(error))
        raise


def _append_line(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:
        stream.write(line + "\n")
        stream.flush()
