"""The audit trail: one hash-chained record per state-changing action, and tampering detected."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from tunesmith.audit.trail import read_log, verify_registry
from tunesmith.cli import app
from tunesmith.cli.common import UsageError
from tunesmith.config import ServeSpec, default_database_url
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.app import create_app

runner = CliRunner()


def _registry() -> Registry:
    return Registry(default_database_url()).connect()


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _setup(adapter: Path) -> None:
    store = ServingStore(_registry())
    store.create_key("acme", admin=False)
    store.register_adapter("voice", adapter.resolve(), "base", tenant="acme")
    store.register_adapter("voice", adapter.parent.resolve(), "base", tenant="acme")
    store.create_deployment("d", [{"model": "voice@1", "weight": 50}, {"model": "voice@2", "weight": 50}],
                            tenant="acme")  # fmt: skip
    store.promote("d", "voice@2")


CLI_COMMANDS: dict[str, tuple[str, list[str]]] = {
    "keys create": ("key.create", ["keys", "create", "--tenant", "globex"]),
    "keys revoke": ("key.revoke", ["keys", "revoke", "1"]),
    "adapters register": (
        "adapter.register",
        ["adapters", "register", "other", "{adapter}", "--tenant", "acme"],
    ),
    "deploy create": (
        "deployment.create",
        ["deploy", "create", "e", "-v", "voice@1=100", "--tenant", "acme"],
    ),
    "deploy weights": (
        "deployment.set_weights",
        ["deploy", "weights", "d", "-v", "voice@1=10", "-v", "voice@2=90"],
    ),
    "deploy promote": ("deployment.promote", ["deploy", "promote", "d", "voice@1"]),
    "deploy rollback": ("deployment.rollback", ["deploy", "rollback", "d"]),
    "logs mode": ("tenant.request_log", ["logs", "mode", "acme", "full"]),
    "logs purge": ("logs.purge", ["logs", "purge", "--older-than", "30d"]),
    "export": ("export", ["export", "{adapter}", "--format", "vllm", "--out", "{adapter}-vllm"]),
}


@pytest.mark.parametrize("name", list(CLI_COMMANDS))
def test_every_mutating_cli_command_leaves_exactly_one_record(name: str, adapter_dirs: list[Path]) -> None:
    _setup(adapter_dirs[0])
    action, args = CLI_COMMANDS[name]
    before = read_log(_registry())
    _cli(*[arg.format(adapter=adapter_dirs[1]) for arg in args])
    after = read_log(_registry())
    assert len(after) == len(before) + 1
    assert after[-1]["action"] == action and after[-1]["actor"].startswith("user:")
    assert verify_registry(_registry()).bad_id is None


ROUTES: dict[str, tuple[str, Callable[[TestClient], object]]] = {
    "create deployment": ("deployment.create", lambda c: c.post(
        "/admin/deployments", json={"name": "e", "tenant": "acme", "variants": [{"model": "voice@1", "weight": 1}]})),
    "set weights": ("deployment.set_weights", lambda c: c.put(
        "/admin/deployments/d/weights", json={"variants": [{"model": "voice@1", "weight": 1}]})),
    "promote": ("deployment.promote", lambda c: c.post("/admin/deployments/d/promote", json={"model": "voice@1"})),
    "rollback": ("deployment.rollback", lambda c: c.post("/admin/deployments/d/rollback")),
    "load adapter": ("adapter.load", lambda c: c.post("/admin/adapters/load", json={"model": "voice@1"})),
    "set guardrails": ("guardrails.set", lambda c: c.put("/admin/guardrails/d", json={"max_output_chars": 100})),
}  # fmt: skip


@pytest.fixture(scope="module")
def admin_client(tiny_model_dir: Path, adapter_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    registry = Registry(f"sqlite:///{tmp_path_factory.mktemp('admin') / 'registry.db'}").connect()
    store = ServingStore(registry)
    admin_key = store.create_key(None, admin=True)
    store.register_adapter("voice", adapter_dirs[0].resolve(), str(tiny_model_dir), tenant="acme")
    store.register_adapter("voice", adapter_dirs[1].resolve(), str(tiny_model_dir), tenant="acme")
    store.create_deployment("d", [{"model": "voice@1", "weight": 50}, {"model": "voice@2", "weight": 50}],
                            tenant="acme")  # fmt: skip
    with TestClient(create_app(ServeSpec(model=str(tiny_model_dir)), registry)) as client:
        client.headers["Authorization"] = f"Bearer {admin_key}"
        yield client, registry


@pytest.mark.parametrize("name", list(ROUTES))
def test_every_mutating_admin_route_leaves_exactly_one_record_naming_the_key(
    name: str, admin_client: tuple[TestClient, Registry]
) -> None:
    client, registry = admin_client
    action, call = ROUTES[name]
    before = read_log(registry)
    response = call(client)
    assert response.status_code in (200, 201), response.text  # type: ignore[attr-defined]
    after = read_log(registry)
    assert len(after) == len(before) + 1
    assert after[-1]["action"] == action and after[-1]["actor"] == "key:1"
    assert verify_registry(registry).bad_id is None


def test_data_prepared_run_started_and_evaluation_recorded_are_recorded(tmp_path: Path) -> None:
    registry = _registry()
    registry.record_dataset("abc", "/data/x.jsonl", 3, {"steps": []})
    registry.record_event("run-1", "started", "go", {"config": {"model": "m"}}, "2026-12-01T00:00:00")
    registry.record_event("run-1", "metrics", "m", {"loss": 1.0}, "2026-12-01T00:00:01")  # not a state change
    registry.record_evaluation("run-1", {"data": {"hash": "abc", "path": "x", "examples": 3}}, tmp_path)
    assert [r["action"] for r in read_log(registry)] == ["data.prepare", "run.start", "evaluation.record"]


def test_editing_a_record_makes_verify_fail_and_name_it(adapter_dirs: list[Path]) -> None:
    _setup(adapter_dirs[0])
    assert "intact" in _cli("audit", "verify")
    registry = _registry()
    with registry.session() as session, session.begin():
        session.execute(text("UPDATE audit_log SET actor = 'user:someone-else' WHERE id = 3"))
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1 and "record 3" in result.output


def test_deleting_a_record_makes_verify_fail_and_name_the_gap(adapter_dirs: list[Path]) -> None:
    _setup(adapter_dirs[0])
    with _registry().session() as session, session.begin():
        session.execute(text("DELETE FROM audit_log WHERE id = 2"))
    result = runner.invoke(app, ["audit", "verify"])
    assert result.exit_code == 1 and "record 3" in result.output


def test_audit_log_prints_json_and_filters_by_age(adapter_dirs: list[Path]) -> None:
    _setup(adapter_dirs[0])
    records = json.loads(_cli("audit", "log", "--json"))
    assert [r["action"] for r in records][:2] == ["key.create", "adapter.register"]
    assert json.loads(_cli("audit", "log", "--since", "1h", "--json")) == records
    assert "deployment.promote" in _cli("audit", "log")
    assert isinstance(runner.invoke(app, ["audit", "log", "--since", "soon"]).exception, UsageError)


def test_concurrent_writers_never_fork_the_chain() -> None:
    stores = [ServingStore(_registry()) for _ in range(4)]  # separate engines, as separate processes have
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: stores[i % 4].create_key(f"tenant{i}", admin=False), range(20)))
    result = verify_registry(_registry())
    assert result.bad_id is None and result.records == 20
