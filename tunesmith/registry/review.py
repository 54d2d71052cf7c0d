"""Registry tables for human review (SQLAlchemy 2.0 ORM, on the registry's `Base`). No torch.

Owns: the schema for review tasks (what is reviewed, how, by how many reviewers, with which rubric),
their items (a prompt, its reference and the outputs under review, each with the model that wrote it)
and the judgements reviewers store on them (the order the outputs were shown in, the choice resolved
to model identities, rubric scores, an edit, a comment). Does not own: queries, the blind order or the
statistics (see `tunesmith.review`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tunesmith.data.records import Message
from tunesmith.registry.models import Base, _now


class ReviewTaskRecord(Base):
    """A review task an admin created: its kind, rubric, source and how many reviewers judge each item."""

    __tablename__ = "review_tasks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))  # a `tunesmith.review.records.ReviewKind` value
    rubric: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # a RubricSpec, written out
    source: Mapped[dict[str, Any]] = mapped_column(JSON)  # where the items came from (evaluation, ...)
    reviewers_per_item: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # open | closed
    created_by: Mapped[str] = mapped_column(String(128))  # the audit actor who created it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ReviewItemRecord(Base):
    """One thing to judge: a prompt with one output (rubric, data) or two (pairwise, model vs human)."""

    __tablename__ = "review_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("review_tasks.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # 0, 1, ... in the task
    prompt: Mapped[list[Message]] = mapped_column(JSON)  # chat messages ending with a user turn
    reference: Mapped[str | None] = mapped_column(Text, nullable=True)
    outputs: Mapped[list[dict[str, str]]] = mapped_column(JSON)  # [{"model": ..., "text": ...}]
    source: Mapped[dict[str, Any]] = mapped_column(JSON)  # e.g. {"example": 3} or {"request_id": ...}


class ReviewJudgementRecord(Base):
    """One reviewer's judgement of one item (at most one per reviewer and item)."""

    __tablename__ = "review_judgements"
    __table_args__ = (UniqueConstraint("item_id", "reviewer"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("review_tasks.id"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    reviewer: Mapped[str] = mapped_column(String(128))  # "key:<id>", the audit actor
    reviewer_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    shown: Mapped[list[str]] = mapped_column(JSON)  # model identities, left (A) to right (B)
    choice: Mapped[str | None] = mapped_column(String(16), nullable=True)  # a `Choice` value, as shown
    preferred: Mapped[str | None] = mapped_column(String(256), nullable=True)  # model, "tie" or "both_bad"
    scores: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)  # criterion -> 1..5
    edited_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # time on the item, as the page saw
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
