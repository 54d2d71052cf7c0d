"""Queries on the request log and the feedback on it: logging a request as its tenant's privacy mode
says, purging old ones, reading them back for a caller, storing and listing feedback. No torch.

Owns: those queries, as the base class `ServingStore` (`serving_store`) inherits, so the server and the
commands keep one store object. Does not own: the schema (`serving`), what the text is reduced to
(`audit.privacy`), or turning feedback into datasets (`data.feedback`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from tunesmith.audit.privacy import DEFAULT_MODE, RequestLogMode, apply_mode
from tunesmith.audit.trail import append, local_actor
from tunesmith.config import ConfigError
from tunesmith.registry.serving import FeedbackRecord, OutcomeEventRecord, RequestLogRecord, TenantRecord
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.store import Registry


class NotFoundError(ConfigError):
    """A name the caller may not see (or that does not exist: the two look the same on purpose)."""


class RequestLogQueries:
    """The request-log and feedback queries over a connected `Registry`."""

    registry: Registry

    def _session(self) -> Session:
        return self.registry.session()

    # ------------------------------------------------------------------ request log and feedback

    def log_request(self, *, prompt: dict[str, Any], outputs: list[str], **fields: Any) -> None:
        """Log a request, its text kept as its tenant's request-log mode says (redacted by default)."""
        with self._session() as session, session.begin():
            tenant = session.get(TenantRecord, fields["tenant"]) if fields.get("tenant") else None
            mode = RequestLogMode(tenant.request_log) if tenant and tenant.request_log else DEFAULT_MODE
            prompt, outputs = apply_mode(mode, prompt, outputs)
            session.add(RequestLogRecord(prompt=prompt, outputs=outputs, **fields))

    def set_request_logging(self, tenant: str, mode: RequestLogMode, *, actor: str | None = None) -> None:
        """Set how much prompt and output text `tenant`'s request log keeps (creates the tenant if new)."""
        with self._session() as session, session.begin():
            record = session.get(TenantRecord, tenant)
            if record is None:
                record = TenantRecord(name=tenant)
                session.add(record)
            before = {"request_log": record.request_log or str(DEFAULT_MODE)}
            record.request_log = str(mode)
            append(
                session,
                actor or local_actor(),
                "tenant.request_log",
                tenant,
                before,
                {"request_log": str(mode)},
            )

    def purge_requests(self, older_than_seconds: float, *, actor: str | None = None) -> dict[str, int]:
        """Delete logged requests older than the cutoff, with the feedback and outcome events on them.

        Feedback on a kept request that prefers it over a purged one keeps its rating and comment and
        loses the link (`preferred_over` set to null): retention wins over the comparison. Returns counts.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        with self._session() as session, session.begin():
            old = select(RequestLogRecord.id).where(RequestLogRecord.created_at < cutoff)
            counts = {
                "feedback": session.execute(
                    delete(FeedbackRecord).where(FeedbackRecord.response_id.in_(old))
                ),
                "outcome_events": session.execute(
                    delete(OutcomeEventRecord).where(OutcomeEventRecord.response_id.in_(old))
                ),
                "unlinked_preferences": session.execute(
                    update(FeedbackRecord)
                    .where(FeedbackRecord.preferred_over.in_(old))
                    .values(preferred_over=None)
                ),
                "requests": session.execute(
                    delete(RequestLogRecord).where(RequestLogRecord.created_at < cutoff)
                ),
            }
            result = {name: int(outcome.rowcount) for name, outcome in counts.items()}  # type: ignore[attr-defined]
            after = {"older_than_seconds": older_than_seconds, **result}
            append(session, actor or local_actor(), "logs.purge", "request_log", None, after)
        return result

    def get_request(self, caller: Caller, response_id: str) -> dict[str, Any] | None:
        with self._session() as session:
            record = session.get(RequestLogRecord, response_id)
            if record is None or not caller.can_see(record.tenant):
                return None
            return _request_dict(record)

    def record_feedback(self, caller: Caller, response_id: str, **fields: Any) -> int:
        """Store feedback on a response the caller may see; NotFoundError otherwise."""
        for response in (response_id, fields.get("preferred_over"), *(fields.get("ranking") or ())):
            if response is not None and self.get_request(caller, response) is None:
                raise NotFoundError(f"no response with id {response}")
        with self._session() as session, session.begin():
            record = FeedbackRecord(response_id=response_id, tenant=caller.tenant, **fields)
            session.add(record)
            session.flush()
            return record.id

    def feedback_with_requests(
        self, *, deployment: str | None = None, adapter: str | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Feedback on requests served by `deployment`, or answered by any version of `adapter`, with
        those requests and the ones a preference or ranking compares them with."""
        every_feedback = self.list_feedback()  # its own session: SQLite sessions hold the write lock
        with self._session() as session:
            query = select(RequestLogRecord)
            if deployment is not None:
                query = query.where(RequestLogRecord.deployment == deployment)
            if adapter is not None:
                query = query.where(RequestLogRecord.variant.startswith(f"{adapter}@"))
            requests = {record.id: _request_dict(record) for record in session.scalars(query)}
            feedback = [item for item in every_feedback if item["response_id"] in requests]
            for item in feedback:
                for other in (item["preferred_over"], *(item["ranking"] or ())):
                    if other is not None and other not in requests:
                        record = session.get(RequestLogRecord, other)
                        if record is not None:  # ranking ids are checked when stored, not foreign keys
                            requests[other] = _request_dict(record)
            return list(requests.values()), feedback

    def list_feedback(self, response_id: str | None = None) -> list[dict[str, Any]]:
        with self._session() as session:
            query = select(FeedbackRecord).order_by(FeedbackRecord.id)
            if response_id is not None:
                query = query.where(FeedbackRecord.response_id == response_id)
            return [
                {
                    "id": f.id,
                    "response_id": f.response_id,
                    "tenant": f.tenant,
                    "rating": f.rating,
                    "thumbs": f.thumbs,
                    "comment": f.comment,
                    "correction": f.correction,
                    "preferred_over": f.preferred_over,
                    "ranking": f.ranking,
                }
                for f in session.scalars(query)
            ]


def _request_dict(record: RequestLogRecord) -> dict[str, Any]:
    data = {column.name: getattr(record, column.name) for column in RequestLogRecord.__table__.columns}
    data["created_at"] = record.created_at.isoformat()
    plain: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return plain
