"""Registry tables for the improvement loop (SQLAlchemy 2.0 ORM, on the registry's `Base`). No torch.

Owns: the schema for loop cycles (one per attempt to replace a deployment's champion: its state, the
champion and candidate it names, the policy it runs under and the lineage each step added) and their
events (every state a cycle entered, in order, with what the step made). Does not own: queries or the
rules of which state follows which (see `loop_store`, `tunesmith.loop`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tunesmith.registry.models import Base, _now


class LoopCycleRecord(Base):
    """One cycle of the loop on a deployment: trigger, dataset, candidate, gate, canary, decision."""

    __tablename__ = "loop_cycles"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[str] = mapped_column(String(32))  # a `tunesmith.loop.states.LoopState` value
    champion: Mapped[str] = mapped_column(String(256))  # the adapter version serving when it began
    candidate: Mapped[str | None] = mapped_column(String(256), nullable=True)  # once trained
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)  # the policy it runs under, fixed at its start
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)  # state -> what that step made or decided
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # why it was blocked, rolled back...
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class LoopEventRecord(Base):
    """A state a cycle entered: who moved it, what the step made (the cycle's history)."""

    __tablename__ = "loop_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    loop_id: Mapped[int] = mapped_column(ForeignKey("loop_cycles.id"), index=True)
    state: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
