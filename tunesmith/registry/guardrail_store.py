"""Queries for guardrails: the settings of each deployment, adapter or `base`, and the action log. No torch.

Owns: setting and clearing a target's guardrails (each change audited in its transaction), reading
them (the server reads a request's candidates in one query, so a change applies to the next request
with no restart), and appending and listing guardrail actions. Does not own: the schema (see
`serving`), what the settings mean (see `audit.guardrails`), or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from tunesmith.audit.trail import append, local_actor
from tunesmith.config import GuardrailSpec
from tunesmith.registry.serving import DeploymentRecord, GuardrailEventRecord, GuardrailRecord
from tunesmith.registry.serving_store import (
    BASE_MODEL_NAME,
    Caller,
    NotFoundError,
    ServingStore,
    parse_model_ref,
)
from tunesmith.registry.store import Registry

__all__ = ["GuardrailStore"]

_ADMIN = Caller(tenant=None, is_admin=True)


class GuardrailStore:
    """Guardrail queries over a connected `Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _check_target(self, target: str) -> None:
        """`target` must be `base`, a deployment or an adapter name (guardrails cover every version)."""
        if target == BASE_MODEL_NAME:
            return
        with self.registry.session() as session:
            if session.get(DeploymentRecord, target) is not None:
                return
        if "@" in target:
            raise NotFoundError(
                f"{target}: guardrails are set on an adapter name (every version), not name@version"
            )
        try:
            ServingStore(self.registry).find_adapter(_ADMIN, target, None)
        except NotFoundError:
            raise NotFoundError(f"no deployment or adapter named {target} (nor `base`)") from None

    def set(self, target: str, spec: GuardrailSpec, *, actor: str | None = None) -> dict[str, Any]:
        """Store `spec` as `target`'s guardrails (replacing any); returns the stored settings."""
        self._check_target(target)
        if spec.classifier is not None:
            try:
                ServingStore(self.registry).find_adapter(_ADMIN, *parse_model_ref(spec.classifier.adapter))
            except NotFoundError:
                raise NotFoundError(
                    f"classifier.adapter: no adapter named {spec.classifier.adapter}"
                ) from None
        settings = spec.model_dump(mode="json")
        with self.registry.session() as session, session.begin():
            record = session.get(GuardrailRecord, target)
            before = None if record is None else {"spec": record.spec}
            if record is None:
                session.add(GuardrailRecord(target=target, spec=settings))
            else:
                record.spec = settings
            append(session, actor or local_actor(), "guardrails.set", target, before, {"spec": settings})
        return settings

    def clear(self, target: str, *, actor: str | None = None) -> None:
        """Remove `target`'s stored guardrails (its config-file ones, if any, apply again)."""
        with self.registry.session() as session, session.begin():
            record = session.get(GuardrailRecord, target)
            if record is None:
                raise NotFoundError(f"{target} has no stored guardrails (see `tunesmith guardrails list`)")
            before = {"spec": record.spec}
            session.delete(record)
            append(session, actor or local_actor(), "guardrails.clear", target, before, None)

    def get(self, target: str) -> dict[str, Any] | None:
        """`target`'s stored settings, or None."""
        return self.find([target]).get(target)

    def find(self, targets: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored settings of those of `targets` that have some, in one query."""
        with self.registry.session() as session:
            query = select(GuardrailRecord).where(GuardrailRecord.target.in_(list(targets)))
            return {record.target: dict(record.spec) for record in session.scalars(query)}

    def list_targets(self) -> list[dict[str, Any]]:
        with self.registry.session() as session:
            records = session.scalars(select(GuardrailRecord).order_by(GuardrailRecord.target))
            return [
                {"target": r.target, "spec": r.spec, "updated_at": r.updated_at.isoformat()} for r in records
            ]

    def record_events(self, request_id: str, target: str, events: Sequence[dict[str, str]]) -> None:
        """Append one row per action (`{"direction", "guard", "action", "reason"}`) on request `request_id`."""
        with self.registry.session() as session, session.begin():
            session.add_all(
                GuardrailEventRecord(request_id=request_id, target=target, **event) for event in events
            )

    def list_events(self, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest `limit` actions, newest first, optionally of one target's guardrails."""
        with self.registry.session() as session:
            query = select(GuardrailEventRecord).order_by(GuardrailEventRecord.id.desc()).limit(limit)
            if target is not None:
                query = query.where(GuardrailEventRecord.target == target)
            return [
                {"id": e.id, "request_id": e.request_id, "target": e.target, "direction": e.direction,
                 "guard": e.guard, "action": e.action, "reason": e.reason, "at": e.created_at.isoformat()}
                for e in session.scalars(query)
            ]  # fmt: skip
