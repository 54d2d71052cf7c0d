"""The registry on SQLite and on a real PostgreSQL server (started by the test suite): migrations, and
the server, a trainer and the CLI writing at once from separate processes."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from tunesmith.registry.database import create_registry_engine
from tunesmith.registry.models import AdapterRecord, RunEventRecord
from tunesmith.registry.serving import ApiKeyRecord, FeedbackRecord, RequestLogRecord
from tunesmith.registry.serving_store import Caller, Role, ServingStore
from tunesmith.registry.store import Registry

ROWS = 40  # per writer


def _serve(url: str, tag: str) -> list[str]:
    """What the server writes: a request log row per response, then feedback on it."""
    store = ServingStore(Registry(url).connect())
    acknowledged = []
    for index in range(ROWS):
        response_id = f"{tag}-{index}"
        store.log_request(
            id=response_id, tenant=None, endpoint="chat", requested_model="base", deployment=None, variant="base",
            user=None, prompt={"messages": []}, outputs=["hi"], finish_reasons=["stop"], prompt_tokens=3,
            completion_tokens=1, latency_ms=1.0, ttft_ms=1.0,
        )  # fmt: skip
        store.record_feedback(Caller(None, is_admin=True), response_id, rating=5)
        acknowledged.append(response_id)
    return acknowledged


def _train(url: str, run_id: str) -> int:
    """What a trainer writes: its run's events as they happen."""
    registry = Registry(url).connect()
    registry.record_event(run_id, "created", "created", {"config": {"model": "tiny"}}, "2026-01-01T00:00:00")
    for step in range(ROWS):
        registry.record_event(
            run_id, "metrics", f"step {step}", {"train_loss": 1.0 / (step + 1)}, "2026-01-01"
        )
    return ROWS + 1


def _cli(url: str, tag: str) -> int:
    """What the CLI writes: keys for new tenants and adapters they own."""
    store = ServingStore(Registry(url).connect())
    for index in range(ROWS // 2):
        store.create_key(f"{tag}-tenant-{index}", admin=False)
        store.register_adapter(f"{tag}-adapter-{index}", Path(f"/adapters/{tag}/{index}"), "tiny",
                               tenant=f"{tag}-tenant-{index}")  # fmt: skip
    return ROWS // 2


def test_server_trainer_and_cli_write_at_once_and_nothing_is_lost(database_url: str) -> None:
    with ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("spawn")) as pool:
        # every process connects (and so migrates) a fresh database at the same moment
        servers = [pool.submit(_serve, database_url, f"server{i}") for i in range(2)]
        trainers = [pool.submit(_train, database_url, f"run{i}") for i in range(2)]
        clis = [pool.submit(_cli, database_url, f"cli{i}") for i in range(2)]
        acknowledged = [rid for future in servers for rid in future.result(timeout=240)]
        events = sum(future.result(timeout=240) for future in trainers)
        keys = sum(future.result(timeout=240) for future in clis)
    registry = Registry(database_url).connect()
    with registry.session() as session:

        def count(model: Any) -> int:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

        logged = set(session.scalars(select(RequestLogRecord.id)))
        assert logged == set(acknowledged) and count(FeedbackRecord) == len(acknowledged)
        assert count(RunEventRecord) == events
        assert count(ApiKeyRecord) == keys and count(AdapterRecord) == keys


def test_the_schema_is_migrated_to_the_newest_revision(database_url: str) -> None:
    registry = Registry(database_url).connect()
    Registry(database_url).connect()  # connecting again is a no-op
    with registry.session() as session:
        assert session.scalar(text("SELECT version_num FROM alembic_version")) == "0007"
    store = ServingStore(registry)
    key = store.create_key("acme", admin=False)
    assert store.authenticate(key) == Caller("acme", is_admin=False, key_id=1, role=Role.viewer)


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_registry_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000
