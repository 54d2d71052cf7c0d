"""Queries for monitoring: outcome events on responses, a deployment's traffic with its feedback and
outcomes (what the A/B report and the monitor read), and monitoring alerts. No torch.

Owns: storing an outcome event on a response the caller may see, reading one deployment's requests,
feedback and outcomes in one pass, and the alert log. Does not own: the schema (see `serving`), who
may see a response (`ServingStore.get_request`, reused), or any statistics (see `tunesmith.monitor`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from tunesmith.registry.models import AdapterRecord
from tunesmith.registry.serving import (
    FeedbackRecord,
    MonitorAlertRecord,
    OutcomeEventRecord,
    RequestLogRecord,
)
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import NotFoundError, ServingStore
from tunesmith.registry.store import Registry

__all__ = ["MonitorStore"]


class MonitorStore:
    """Monitoring queries over a connected `Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def record_outcome(self, caller: Caller, response_id: str, name: str, value: float | None) -> int:
        """Store an outcome event on a response the caller may see; NotFoundError otherwise."""
        # its own session before ours: nested SQLite sessions would wait on each other's write lock
        if ServingStore(self.registry).get_request(caller, response_id) is None:
            raise NotFoundError(f"no response with id {response_id}")
        with self.registry.session() as session, session.begin():
            record = OutcomeEventRecord(response_id=response_id, tenant=caller.tenant, name=name, value=value)
            session.add(record)
            session.flush()
            return record.id

    def list_outcomes(self, response_id: str | None = None) -> list[dict[str, Any]]:
        with self.registry.session() as session:
            query = select(OutcomeEventRecord).order_by(OutcomeEventRecord.id)
            if response_id is not None:
                query = query.where(OutcomeEventRecord.response_id == response_id)
            return [
                {
                    "id": o.id,
                    "response_id": o.response_id,
                    "tenant": o.tenant,
                    "name": o.name,
                    "value": o.value,
                }
                for o in session.scalars(query)
            ]

    def deployment_traffic(self, deployment: str) -> list[dict[str, Any]]:
        """Every request the deployment served, oldest first, as `{"id", "variant", "user", "prompt", "created_at",
        "latency_ms", "outputs", "finish_reasons", "completion_tokens", "feedback": [...],
        "outcomes": [...]}` (feedback items carry rating, thumbs, preferred_over, ranking)."""
        with self.registry.session() as session:
            requests = session.scalars(
                select(RequestLogRecord)
                .where(RequestLogRecord.deployment == deployment)
                .order_by(RequestLogRecord.created_at, RequestLogRecord.id)
            ).all()
            traffic: dict[str, dict[str, Any]] = {
                r.id: {
                    "id": r.id,
                    "variant": r.variant,
                    "user": r.user,
                    "prompt": r.prompt,
                    "created_at": r.created_at.isoformat(),
                    "latency_ms": r.latency_ms,
                    "outputs": list(r.outputs),
                    "finish_reasons": list(r.finish_reasons),
                    "completion_tokens": r.completion_tokens,
                    "feedback": [],
                    "outcomes": [],
                }
                for r in requests
            }
            ids = list(traffic)
            for start in range(0, len(ids), 500):  # SQLite caps the parameters of one statement
                chunk = ids[start : start + 500]
                for f in session.scalars(select(FeedbackRecord).where(FeedbackRecord.response_id.in_(chunk))):
                    traffic[f.response_id]["feedback"].append(
                        {"rating": f.rating, "thumbs": f.thumbs, "preferred_over": f.preferred_over,
                         "ranking": f.ranking}
                    )  # fmt: skip
                query = select(OutcomeEventRecord).where(OutcomeEventRecord.response_id.in_(chunk))
                for o in session.scalars(query):
                    traffic[o.response_id]["outcomes"].append({"name": o.name, "value": o.value})
            return list(traffic.values())

    def adapter_run_id(self, name: str, version: int) -> str | None:
        """The run that trained adapter `name@version` (None when it was registered from a folder)."""
        with self.registry.session() as session:
            return session.scalar(
                select(AdapterRecord.run_id).where(
                    AdapterRecord.name == name, AdapterRecord.version == version
                )
            )

    def record_alert(self, deployment: str, kind: str, message: str, data: dict[str, Any]) -> int:
        with self.registry.session() as session, session.begin():
            record = MonitorAlertRecord(deployment=deployment, kind=kind, message=message, data=data)
            session.add(record)
            session.flush()
            return record.id

    def alert_counts(self) -> dict[tuple[str, str], int]:
        """How many alerts each (deployment, kind) has raised: what `/metrics` exports."""
        with self.registry.session() as session:
            rows = session.execute(
                select(MonitorAlertRecord.deployment, MonitorAlertRecord.kind, func.count()).group_by(
                    MonitorAlertRecord.deployment, MonitorAlertRecord.kind
                )
            ).all()
            return {(deployment, kind): int(count) for deployment, kind, count in rows}

    def list_alerts(self, deployment: str | None = None) -> list[dict[str, Any]]:
        with self.registry.session() as session:
            query = select(MonitorAlertRecord).order_by(MonitorAlertRecord.id)
            if deployment is not None:
                query = query.where(MonitorAlertRecord.deployment == deployment)
            return [
                {"id": a.id, "deployment": a.deployment, "kind": a.kind, "message": a.message, "data": a.data,
                 "at": a.created_at.isoformat()}
                for a in session.scalars(query)
            ]  # fmt: skip
