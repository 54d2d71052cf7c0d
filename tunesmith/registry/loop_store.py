"""Queries for the improvement loop: start a cycle, move it from one state to the next, read cycles and
their history. No torch.

Owns: each transition committed in one transaction with its event and its audit record (so a killed
`tunesmith loop run` finds the last state that completed, and the trail names every step), refusing a
move from a state the cycle is no longer in (two runs racing) and a second open cycle on a deployment.
Does not own: which state follows which, or the work between them (see `tunesmith.loop`), or the
tables (see `loop`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.audit.trail import append, local_actor
from tunesmith.config import ConfigError
from tunesmith.registry.loop import LoopCycleRecord, LoopEventRecord
from tunesmith.registry.store import Registry

__all__ = ["LoopCycle", "LoopStore"]


@dataclass(frozen=True)
class LoopCycle:
    """A cycle as the loop reads it."""

    id: int
    deployment: str
    state: str
    champion: str
    candidate: str | None
    policy: dict[str, Any]
    lineage: dict[str, Any]  # state -> what the step that entered it made or decided
    reason: str | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "deployment": self.deployment, "state": self.state, "champion": self.champion,
            "candidate": self.candidate, "reason": self.reason, "policy": self.policy, "lineage": self.lineage,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }  # fmt: skip


def _cycle(record: LoopCycleRecord) -> LoopCycle:
    return LoopCycle(
        record.id, record.deployment, record.state, record.champion, record.candidate, dict(record.policy),
        dict(record.lineage), record.reason, record.created_at, record.updated_at,
    )  # fmt: skip


class LoopStore:
    """Loop queries over a connected `Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def start(
        self,
        deployment: str,
        champion: str,
        policy: dict[str, Any],
        state: str,
        data: dict[str, Any],
        message: str,
        *,
        open_states: set[str],
        actor: str | None = None,
    ) -> LoopCycle:
        """A new cycle in `state` (the trigger), unless the deployment has one in an `open_states` state."""
        with self.registry.session() as session, session.begin():
            running = session.scalar(
                select(LoopCycleRecord.id).where(
                    LoopCycleRecord.deployment == deployment, LoopCycleRecord.state.in_(open_states)
                )
            )
            if running is not None:
                raise ConfigError(f"deployment {deployment} already has loop {running} under way")
            record = LoopCycleRecord(
                deployment=deployment, state=state, champion=champion, policy=policy, lineage={state: data}
            )
            session.add(record)
            session.flush()
            self._record(session, record, None, state, data, message, actor)
            return _cycle(record)

    def advance(
        self,
        loop_id: int,
        from_state: str,
        to_state: str,
        data: dict[str, Any],
        message: str,
        *,
        candidate: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
    ) -> LoopCycle:
        """Move cycle `loop_id` from `from_state` to `to_state`, adding `data` to its lineage."""
        with self.registry.session() as session, session.begin():
            record = session.get(LoopCycleRecord, loop_id)
            if record is None:
                raise ConfigError(f"no loop with id {loop_id} (see `tunesmith loop status`)")
            if record.state != from_state:
                raise ConfigError(
                    f"loop {loop_id} is {record.state}, not {from_state} (another `loop run` moved it?)"
                )
            record.state = to_state
            record.lineage = {**record.lineage, to_state: data}
            if candidate is not None:
                record.candidate = candidate
            if reason is not None:
                record.reason = reason
            self._record(session, record, from_state, to_state, data, message, actor)
            return _cycle(record)

    def record_failure(self, loop_id: int, error: str, *, actor: str | None = None) -> None:
        """Note that the step after the cycle's state failed (the state stays: the next run retries)."""
        with self.registry.session() as session, session.begin():
            record = session.get(LoopCycleRecord, loop_id)
            assert record is not None
            who = actor or local_actor()
            data = {"failed": True, "error": error}
            session.add(LoopEventRecord(loop_id=loop_id, state=record.state, actor=who,
                                        message=f"step failed: {error}", data=data))  # fmt: skip
            append(session, who, "loop.step_failed", f"loop:{loop_id}", {"state": record.state}, data)

    def _record(
        self,
        session: Session,
        record: LoopCycleRecord,
        from_state: str | None,
        to_state: str,
        data: dict[str, Any],
        message: str,
        actor: str | None,
    ) -> None:
        who = actor or local_actor()
        session.add(LoopEventRecord(loop_id=record.id, state=to_state, actor=who, message=message, data=data))
        before = None if from_state is None else {"state": from_state}
        after = {"state": to_state, "deployment": record.deployment, "champion": record.champion,
                 "candidate": record.candidate, "message": message, **data}  # fmt: skip
        append(session, who, f"loop.{to_state}", f"loop:{record.id}", before, after)

    def get(self, loop_id: int) -> LoopCycle:
        with self.registry.session() as session:
            record = session.get(LoopCycleRecord, loop_id)
            if record is None:
                raise ConfigError(f"no loop with id {loop_id} (see `tunesmith loop status`)")
            return _cycle(record)

    def cycles(self, deployment: str | None = None) -> list[LoopCycle]:
        """Cycles oldest first, optionally of one deployment."""
        with self.registry.session() as session:
            query = select(LoopCycleRecord).order_by(LoopCycleRecord.id)
            if deployment is not None:
                query = query.where(LoopCycleRecord.deployment == deployment)
            return [_cycle(record) for record in session.scalars(query)]

    def history(self, loop_id: int) -> list[dict[str, Any]]:
        """The states cycle `loop_id` entered, oldest first, with who moved it and what the step made."""
        with self.registry.session() as session:
            events = session.scalars(
                select(LoopEventRecord).where(LoopEventRecord.loop_id == loop_id).order_by(LoopEventRecord.id)
            )
            return [
                {"state": e.state, "actor": e.actor, "message": e.message, "data": e.data,
                 "at": e.created_at.isoformat()}
                for e in events
            ]  # fmt: skip
