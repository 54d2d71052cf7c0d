"""Request-log privacy: per-tenant text modes, purging old rows, an owner-only registry file."""

from __future__ import annotations

import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tunesmith.audit.privacy import RequestLogMode
from tunesmith.audit.trail import read_log
from tunesmith.cli import app
from tunesmith.config import ServeSpec, default_database_url
from tunesmith.registry.serving import FeedbackRecord, OutcomeEventRecord
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.app import create_app

ACME = Caller(tenant="acme", is_admin=False)
ADMIN = Caller(tenant=None, is_admin=True)
EMAIL = "jane.doe@example.com"


def _store() -> ServingStore:
    return ServingStore(Registry(default_database_url()).connect())


def _log(
    store: ServingStore, response_id: str, *, tenant: str = "acme", age_days: float = 0, **extra: Any
) -> None:
    store.log_request(
        id=response_id, tenant=tenant, endpoint="chat", requested_model="base", deployment=None, variant="base",
        user=None, prompt={"messages": [{"role": "user", "content": f"mail me at {EMAIL}"}]},
        outputs=[f"sure, writing to {EMAIL}"], finish_reasons=["stop"], prompt_tokens=1, completion_tokens=1,
        latency_ms=5.0, created_at=datetime.now(UTC) - timedelta(days=age_days), **extra,
    )  # fmt: skip


def test_the_default_redaction_keeps_an_email_out_of_the_request_log() -> None:
    store = _store()
    _log(store, "r1")
    logged = store.get_request(ADMIN, "r1")
    assert logged is not None
    assert EMAIL not in str(logged) and "[EMAIL]" in logged["prompt"]["messages"][0]["content"]
    assert logged["outputs"] == ["sure, writing to [EMAIL]"]


@pytest.mark.parametrize(
    ("mode", "content"),
    [(RequestLogMode.OFF, None), (RequestLogMode.REDACTED, "mail me at [EMAIL]"), (RequestLogMode.FULL, f"mail me at {EMAIL}")],
)  # fmt: skip
def test_each_tenant_mode_keeps_as_much_text_as_it_says(mode: RequestLogMode, content: str | None) -> None:
    store = _store()
    result = CliRunner().invoke(app, ["logs", "mode", "acme", str(mode)])
    assert result.exit_code == 0, result.output
    _log(store, "r1")
    logged = store.get_request(ADMIN, "r1")
    assert logged is not None
    assert (logged["prompt"]["messages"][0]["content"] if content else logged["prompt"]) == (content or {})
    assert read_log(store.registry)[-1]["action"] == "tenant.request_log"


def test_purge_removes_old_rows_and_their_feedback_and_keeps_new_ones_with_theirs() -> None:
    store = _store()
    _log(store, "old", age_days=40)
    _log(store, "new", age_days=1)
    store.record_feedback(ACME, "old", rating=1)
    store.record_feedback(ACME, "new", rating=5, preferred_over="old")
    store.record_feedback(ACME, "new", thumbs="up")
    with store.registry.session() as session, session.begin():
        session.add(OutcomeEventRecord(response_id="old", tenant="acme", name="click"))
        session.add(OutcomeEventRecord(response_id="new", tenant="acme", name="click"))
    result = CliRunner().invoke(app, ["logs", "purge", "--older-than", "30d", "--json"])
    assert result.exit_code == 0, result.output
    assert store.get_request(ADMIN, "old") is None and store.get_request(ADMIN, "new") is not None
    feedback = store.list_feedback(None)
    assert sorted(f["response_id"] for f in feedback) == ["new", "new"]
    assert all(f["preferred_over"] is None for f in feedback)  # the link to a purged request is cleared
    with store.registry.session() as session:
        assert [e.response_id for e in session.query(OutcomeEventRecord)] == ["new"]
        assert session.query(FeedbackRecord).count() == 2
    assert read_log(store.registry)[-1]["after"]["requests"] == 1


def test_the_sqlite_registry_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    Registry(f"sqlite:///{path}").connect()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_server_applies_the_retention_setting_at_start(tiny_model_dir: Path) -> None:
    store = _store()
    _log(store, "old", age_days=40)
    _log(store, "new", age_days=1)
    spec = ServeSpec(model=str(tiny_model_dir), log_retention="30d")  # type: ignore[arg-type]
    with TestClient(create_app(spec, store.registry)):
        for _ in range(100):  # the purge runs as a task beside the server
            if store.get_request(ADMIN, "old") is None:
                break
            time.sleep(0.05)
    assert store.get_request(ADMIN, "old") is None and store.get_request(ADMIN, "new") is not None
    assert read_log(store.registry)[-1]["actor"] == "server:retention"
