"""The audit trail: an append-only, hash-chained log of every state-changing action. No torch.

Owns: appending a record inside the caller's registry session (so the change and its record commit
together), the hash chain (each record's sha256 over its canonical JSON and the previous record's
hash), verifying the chain, and who the local actor is. Does not own: the table (see
`registry.models.AuditRecord`) or deciding which actions are recorded (the stores call `append`).

Two writers never fork the chain: on SQLite every transaction begins with `BEGIN IMMEDIATE`
(see `registry.database`), so reading the last hash and appending are serialised; on PostgreSQL
`append` takes a transaction-scoped advisory lock first.
"""

from __future__ import annotations

import getpass
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tunesmith.registry.models import AuditRecord

if TYPE_CHECKING:  # the store imports this module to append
    from tunesmith.registry.store import Registry

GENESIS_HASH = "0" * 64  # the "previous hash" of the first record
_AUDIT_LOCK = 0x6175_6474  # PostgreSQL advisory lock id ("audt") held while appending


def local_actor() -> str:
    """The actor for actions taken on this machine (the CLI): the OS login name."""
    return f"user:{getpass.getuser()}"


def key_actor(key_id: int | None) -> str:
    """The actor for an HTTP call made with API key `key_id` (None: auth is off)."""
    return f"key:{key_id}" if key_id is not None else "anonymous"


def record_hash(fields: dict[str, Any], previous_hash: str) -> str:
    """sha256 over the record's canonical JSON (sorted keys, no spaces) followed by the previous hash."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((canonical + previous_hash).encode()).hexdigest()


def _fields(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "before": record.before,
        "after": record.after,
        "created_at": record.created_at,
    }


def append(
    session: Session,
    actor: str,
    action: str,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Append one record in `session`'s open transaction (it commits with the change it records)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _AUDIT_LOCK})
    last = session.scalar(select(AuditRecord).order_by(AuditRecord.id.desc()).limit(1))
    previous_hash = last.hash if last is not None else GENESIS_HASH
    record = AuditRecord(
        id=(last.id if last is not None else 0) + 1,
        actor=actor,
        action=action,
        target=target,
        before=before,
        after=after,
        created_at=datetime.now(UTC).isoformat(),
        previous_hash=previous_hash,
        hash="",
    )
    record.hash = record_hash(_fields(record), previous_hash)
    session.add(record)
    session.flush()


@dataclass(frozen=True)
class Verification:
    """The result of checking the chain: how many records, and the first bad one (None: all good)."""

    records: int
    bad_id: int | None
    reason: str


def verify(session: Session) -> Verification:
    """Recompute the chain; the first record whose hash, link or id sequence is wrong is named."""
    previous_hash, expected_id, count = GENESIS_HASH, 1, 0
    for record in session.scalars(select(AuditRecord).order_by(AuditRecord.id)):
        count += 1
        if record.id != expected_id:
            return Verification(count, record.id, f"expected record {expected_id} next (one deleted?)")
        if record.previous_hash != previous_hash:
            return Verification(count, record.id, "previous hash does not match the record before it")
        if record.hash != record_hash(_fields(record), previous_hash):
            return Verification(count, record.id, "hash does not match its contents (edited?)")
        previous_hash, expected_id = record.hash, expected_id + 1
    return Verification(count, None, "ok")


def read_log(registry: Registry, max_age_seconds: float | None = None) -> list[dict[str, Any]]:
    """The records oldest first, optionally only those at most `max_age_seconds` old."""
    with registry.session() as session:
        rows = [
            _fields(r) | {"hash": r.hash}
            for r in session.scalars(select(AuditRecord).order_by(AuditRecord.id))
        ]
    if max_age_seconds is None:
        return rows
    since = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
    return [row for row in rows if datetime.fromisoformat(row["created_at"]) >= since]


def verify_registry(registry: Registry) -> Verification:
    """`verify` over a connected registry in one read-only session."""
    with registry.session() as session:
        return verify(session)
