"""The registry store: record and query datasets, runs, events, adapters and evaluations. No torch.

Owns: sessions and the queries the CLI needs (a run with its lineage: events, adapters, evaluations and
the gate verdicts on them), and the listener that mirrors a run's events into the database as they
happen. Does not own: the schema (see `models`), the connection and migrations
(see `database`) or the run folder.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.audit.trail import append, local_actor
from tunesmith.config import ConfigError, tunesmith_home
from tunesmith.registry import loop as _loop  # noqa: F401  (its tables join `Base`)
from tunesmith.registry import review as _review  # noqa: F401  (its tables join `Base`)
from tunesmith.registry import serving as _serving  # noqa: F401  (its tables join `Base`)
from tunesmith.registry.database import create_registry_engine, migrate
from tunesmith.registry.models import (
    AdapterRecord,
    DatasetRecord,
    EvaluationRecord,
    RunEventRecord,
    RunRecord,
)

# Event types that move a run to a new status (the rest are informational).
_STATUS_EVENTS = {"created", "validating_data", "running", "succeeded", "failed", "cancelled"}
# What a run's gate verdicts show beside its evaluations (see `project.gate.gate_verdict`).
_VERDICT_KEYS = ("passed", "evaluation_id", "adapter_dir", "checks")


class Registry:
    """A registry database: SQLite by default, PostgreSQL (or another SQLAlchemy URL) otherwise."""

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> Registry:
        """Create the database if missing and migrate it to the newest schema; returns self."""
        if self.url.startswith("sqlite:///") and self.url != "sqlite:///:memory:":
            path = Path(self.url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            # Prompts, outputs and key hashes live here: readable by its owner only. SQLite gives its
            # -wal and -shm files the database file's permissions.
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            path.chmod(0o600)
        self._engine: Engine = create_registry_engine(self.url)
        migrate(self._engine)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self

    def session(self) -> Session:
        return self._sessions()

    # ------------------------------------------------------------------ runs and events

    def run_listener(self, adapter_name: str | None = None) -> Callable[[Any], None]:
        """A listener for `train_sft` that mirrors each event (and the outcome) into the registry."""

        def listen(event: Any) -> None:
            self.record_event(
                event.run_id,
                event.type.value,
                event.message,
                event.data,
                event.created_at,
                adapter_name=adapter_name,
            )

        return listen

    def record_event(
        self,
        run_id: str,
        type_: str,
        message: str,
        data: dict[str, Any],
        created_at: str,
        *,
        adapter_name: str | None = None,
    ) -> None:
        with self.session() as session, session.begin():
            run = session.get(RunRecord, run_id)
            if run is None:
                config = data.get("config", {})
                run = RunRecord(
                    id=run_id,
                    status=type_,
                    method=config.get("tuning", config.get("method", "lora")),  # runs before `tuning`: method
                    base_model=config.get("model", ""),
                    run_dir=str(data.get("run_dir", "")),
                    config=config,
                    metrics={},
                )
                session.add(run)
                session.flush()
                append(session, local_actor(), "run.start", run_id, None, {"status": type_, "config": config})
            session.add(
                RunEventRecord(run_id=run_id, type=type_, message=message, data=data, created_at=created_at)
            )
            if type_ in _STATUS_EVENTS:
                run.status = type_
            if type_ == "failed":
                run.error = message
                run.finished_at = datetime.now(UTC)
            if type_ == "metrics":
                run.metrics = {**run.metrics, **{k: v for k, v in data.items() if k.endswith("loss")}}
            if type_ == "succeeded":
                self._record_success(session, run, data, adapter_name)

    def _record_success(
        self, session: Session, run: RunRecord, data: dict[str, Any], adapter_name: str | None
    ) -> None:
        run.finished_at = datetime.now(UTC)
        run.trained_tokens = data["trained_tokens"]
        run.wall_seconds = data["wall_seconds"]
        run.metrics = {
            "train_loss": data["train_loss"],
            "val_loss": data["val_loss"],
            "tokens_per_second": data["tokens_per_second"],
            "steps": data["steps"],
            "device": data["device"],
            "precision": data["precision"],
            "peak_memory_gb": data["peak_memory_gb"],
        }
        config = run.config
        run.dataset_id = self._ensure_dataset(
            session, data["data_hash"], config.get("data"), data["num_examples"]
        )
        if data.get("val_data_hash"):
            run.val_dataset_id = self._ensure_dataset(
                session, data["val_data_hash"], config.get("val_data"), None
            )
        if run.method == "lora":
            name = adapter_name or config.get("name") or run.id
            version = (
                session.scalar(select(func.max(AdapterRecord.version)).where(AdapterRecord.name == name)) or 0
            ) + 1
            session.add(
                AdapterRecord(
                    name=name,
                    version=version,
                    run_id=run.id,
                    path=data["artifact_dir"],
                    base_model=run.base_model,
                )
            )
            after = {"path": data["artifact_dir"], "run_id": run.id}
            append(session, local_actor(), "adapter.register", f"{name}@{version}", None, after)

    def _ensure_dataset(self, session: Session, digest: str, path: str | None, rows: int | None) -> str:
        if session.get(DatasetRecord, digest) is None:
            session.add(DatasetRecord(id=digest, path=str(path or ""), rows=rows or 0))
            session.flush()
        return digest

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.session() as session:
            runs = session.scalars(select(RunRecord).order_by(RunRecord.created_at.desc()).limit(limit)).all()
            return [_run_dict(run) for run in runs]

    def measured_throughput(self, base_model: str, method: str, device: str, precision: str) -> list[float]:
        """Tokens/s of succeeded runs of this model and method on this kind of device (time estimates)."""
        with self.session() as session:
            runs = session.scalars(
                select(RunRecord)
                .where(RunRecord.status == "succeeded", RunRecord.base_model == base_model)
                .where(RunRecord.method == method)
                .order_by(RunRecord.created_at.desc())
                .limit(20)
            ).all()
            return [
                float(run.metrics["tokens_per_second"])
                for run in runs
                if run.metrics.get("device") == device and run.metrics.get("precision") == precision
            ]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run with its events, adapters and evaluations; `run_id` may be a unique prefix."""
        with self.session() as session:
            run = session.get(RunRecord, run_id)
            if run is None:
                matches = session.scalars(select(RunRecord).where(RunRecord.id.startswith(run_id))).all()
                run = matches[0] if len(matches) == 1 else None
            if run is None:
                return None
            result = _run_dict(run)
            result["config"] = run.config
            events = session.scalars(
                select(RunEventRecord).where(RunEventRecord.run_id == run.id).order_by(RunEventRecord.id)
            )
            result["events"] = [
                {"type": e.type, "message": e.message, "created_at": e.created_at} for e in events
            ]
            adapters = session.scalars(select(AdapterRecord).where(AdapterRecord.run_id == run.id))
            result["adapters"] = [{"name": a.name, "version": a.version, "path": a.path} for a in adapters]
            evaluations = session.scalars(
                select(EvaluationRecord)
                .where(EvaluationRecord.run_id == run.id)
                .order_by(EvaluationRecord.id)
            )
            result["evaluations"] = [
                {
                    "id": e.id,
                    "out_dir": e.out_dir,
                    "task": e.report.get("task"),
                    "kind": e.report.get("kind", "evaluation"),  # or "bias_audit", "gate"
                    "models": e.report.get("models", []),
                    **(
                        {key: e.report[key] for key in _VERDICT_KEYS}
                        if e.report.get("kind") == "gate"
                        else {}
                    ),
                }
                for e in evaluations
            ]
            return result

    def find_run_dir(self, run: str) -> Path:
        """A run folder from its path or id (registry first, then TUNESMITH_HOME/runs/<id>)."""
        path = Path(run)
        if (path / "config.yaml").is_file():
            return path
        record = self.get_run(run)
        if record is not None and (Path(record["run_dir"]) / "config.yaml").is_file():
            return Path(record["run_dir"])
        fallback = tunesmith_home() / "runs" / run
        if (fallback / "config.yaml").is_file():
            return fallback
        raise ConfigError(
            f"{run}: no such run (not a run folder, nor a run id in the registry at {self.url})"
        )

    # ------------------------------------------------------------------ datasets

    def record_dataset(self, digest: str, path: str, rows: int, lineage: dict[str, Any]) -> None:
        """Record a prepared dataset with its lineage (again: the latest path and lineage win)."""
        with self.session() as session, session.begin():
            record = session.get(DatasetRecord, digest)
            before = None if record is None else {"path": record.path, "rows": record.rows}
            if record is None:
                session.add(DatasetRecord(id=digest, path=path, rows=rows, lineage=lineage))
            else:
                record.path, record.rows, record.lineage = path, rows, lineage
            append(session, local_actor(), "data.prepare", digest, before, {"path": path, "rows": rows})

    def get_dataset(self, digest: str) -> dict[str, Any] | None:
        with self.session() as session:
            record = session.get(DatasetRecord, digest)
            if record is None:
                return None
            return {"id": record.id, "path": record.path, "rows": record.rows, "lineage": record.lineage}

    # ------------------------------------------------------------------ exports

    def record_export(self, source: Path, fmt: str, out: Path, size: int, parity: dict[str, Any]) -> None:
        """Audit a published export: what was exported, where, and the parity figures it passed."""
        after = {"source": str(source), "format": fmt, "bytes": size, "parity": parity}
        with self.session() as session, session.begin():
            append(session, local_actor(), "export", str(out.resolve()), None, after)

    # ------------------------------------------------------------------ evaluations

    def record_evaluation(self, run_id: str | None, report: dict[str, Any], out_dir: Path) -> int:
        with self.session() as session, session.begin():
            data = report["data"]
            dataset_id = self._ensure_dataset(session, data["hash"], data["path"], data["examples"])
            known_run = run_id if run_id and session.get(RunRecord, run_id) else None
            record = EvaluationRecord(
                run_id=known_run, dataset_id=dataset_id, out_dir=str(out_dir), report=report
            )
            session.add(record)
            session.flush()
            after = {"run_id": known_run, "dataset_id": dataset_id, "out_dir": str(out_dir)}
            append(session, local_actor(), "evaluation.record", f"evaluation:{record.id}", None, after)
            return record.id

    def record_gate_verdict(self, verdict: dict[str, Any], out_dir: Path) -> int:
        """A gate's verdict on a run (`project.gate.gate_verdict`, passed or failed): an evaluation record of
        kind `gate` beside the evaluation it read, on that evaluation's dataset, audited as `gate.verdict`."""
        with self.session() as session, session.begin():
            read = session.get(EvaluationRecord, verdict["evaluation_id"])
            run_id = verdict["run_id"]
            record = EvaluationRecord(
                run_id=run_id if session.get(RunRecord, run_id) else None,
                dataset_id=read.dataset_id
                if read is not None
                else None,  # None: another registry's evaluation
                out_dir=str(out_dir),
                report=verdict,
            )
            session.add(record)
            session.flush()
            after = {"verdict": f"evaluation:{record.id}", "evaluation_id": verdict["evaluation_id"],
                     "adapter_dir": verdict["adapter_dir"], "passed": verdict["passed"],
                     "failed": [check["line"] for check in verdict["checks"] if not check["passed"]]}  # fmt: skip
            append(session, local_actor(), "gate.verdict", run_id, None, after)
            return record.id


def _run_dict(run: RunRecord) -> dict[str, Any]:
    return {
        "id": run.id,
        "status": run.status,
        "method": run.method,
        "base_model": run.base_model,
        "run_dir": run.run_dir,
        "dataset_id": run.dataset_id,
        "val_dataset_id": run.val_dataset_id,
        "trained_tokens": run.trained_tokens,
        "wall_seconds": run.wall_seconds,
        "metrics": run.metrics,
        "error": run.error,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
