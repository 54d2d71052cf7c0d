"""Registry tables for serving (SQLAlchemy 2.0 ORM, on the registry's `Base`). No torch.

Owns: the schema for tenants, hashed API keys, which tenant owns which adapter name, deployments
(their current variants and every change to them), the request/response log, feedback and
outcome events (clicks, conversions) on responses, monitoring alerts, and guardrail settings and
actions. Does not own: queries (see `serving_store`) or adapter versions (the `adapters` table).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tunesmith.registry.models import Base, _now
from tunesmith.registry.serving_records import VariantWeight


class TenantRecord(Base):
    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    # off | redacted | full (see `audit.privacy.RequestLogMode`); None: the default, redacted.
    request_log: Mapped[str | None] = mapped_column(String(16), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class ApiKeyRecord(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(
        String(64), unique=True
    )  # sha256 hex; the key itself is never stored
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to tell keys apart in listings
    tenant: Mapped[str | None] = mapped_column(ForeignKey("tenants.name"), nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the account, e.g. a reviewer
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)  # a `Role`; set for every key (0007)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class AdapterOwnerRecord(Base):
    """The tenant that owns an adapter name (every version of it)."""

    __tablename__ = "adapter_owners"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str] = mapped_column(ForeignKey("tenants.name"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class DeploymentRecord(Base):
    """A name clients call that splits traffic between variants (`[{"model": "acme@3", "weight": 90}]`)."""

    __tablename__ = "deployments"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    tenant: Mapped[str | None] = mapped_column(ForeignKey("tenants.name"), nullable=True)
    variants: Mapped[list[VariantWeight]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class DeploymentChangeRecord(Base):
    """One change to a deployment's variants (create, set_weights, promote, rollback): the history."""

    __tablename__ = "deployment_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(ForeignKey("deployments.name"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    variants: Mapped[list[VariantWeight]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class RequestLogRecord(Base):
    """One served completion: what was asked, what answered (variant), what came back, how fast."""

    __tablename__ = "request_log"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the response id the client sees
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    endpoint: Mapped[str] = mapped_column(String(32))
    requested_model: Mapped[str] = mapped_column(String(256))
    deployment: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    variant: Mapped[str] = mapped_column(String(256))  # the model that answered, e.g. acme@4 or base
    user: Mapped[str | None] = mapped_column(String(256), nullable=True)
    prompt: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"messages": [...]} or {"prompt": "..."}
    outputs: Mapped[list[str]] = mapped_column(JSON)
    finish_reasons: Mapped[list[str]] = mapped_column(JSON)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class FeedbackRecord(Base):
    """A rating, comment, correction, preference or ranking on a logged response."""

    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    response_id: Mapped[str] = mapped_column(ForeignKey("request_log.id"), index=True)
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1-5; thumbs up = 5, down = 1
    thumbs: Mapped[str | None] = mapped_column(String(8), nullable=True)  # "up" | "down" when given so
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    correction: Mapped[str | None] = mapped_column(Text, nullable=True)
    preferred_over: Mapped[str | None] = mapped_column(ForeignKey("request_log.id"), nullable=True)
    ranking: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)  # response ids, best first
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class OutcomeEventRecord(Base):
    """A business outcome a client reports on a logged response: a click, a conversion, a named event."""

    __tablename__ = "outcome_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    response_id: Mapped[str] = mapped_column(ForeignKey("request_log.id"), index=True)
    tenant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    name: Mapped[str] = mapped_column(String(64))  # "click", "conversion" or the client's own name
    value: Mapped[float | None] = mapped_column(Float, nullable=True)  # e.g. the order's amount
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class MonitorAlertRecord(Base):
    """An alert a monitoring pass raised on a deployment (drift, an output signal, an A/B verdict)."""

    __tablename__ = "monitor_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    deployment: Mapped[str] = mapped_column(String(128), index=True)
    kind: Mapped[str] = mapped_column(String(64))  # e.g. "sample_ratio_mismatch", "input_drift"
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class GuardrailRecord(Base):
    """The guardrails an admin set for a deployment, an adapter name or `base` (see `GuardrailSpec`)."""

    __tablename__ = "guardrails"

    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # a GuardrailSpec, every field written out
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)


class GuardrailEventRecord(Base):
    """One guardrail action on a request: which guard did what, and why (never the matched text)."""

    __tablename__ = "guardrail_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)  # the x-request-id the client got
    target: Mapped[str] = mapped_column(String(128), index=True)  # whose guardrails acted
    direction: Mapped[str] = mapped_column(String(8))  # input | output
    guard: Mapped[str] = mapped_column(String(32))  # pii, terms, topics, max_length, classifier
    action: Mapped[str] = mapped_column(String(16))  # flag, redact, block
    reason: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
