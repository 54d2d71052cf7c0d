"""The bias audit as a promotion gate, on recorded stand-in audits (no model): `deploy promote` and `deploy
weights --require-bias-audit`, the admin routes' flag, and which audit counts (exactly that version, the
latest)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tunesmith.audit.trail import read_log
from tunesmith.cli import app, main
from tunesmith.config import default_database_url
from tunesmith.registry.bias_gate import BiasAuditRequired
from tunesmith.registry.serving_store import Caller, ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.errors import install_error_handlers
from tunesmith.serve.limits import AuthFailureLimit
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.routes import admin

FAILURE = "names_gender: refusal_flip 0.300 [0.100, 0.500] over 20 pairs; upper bound 0.519 above 0.1"


def record_audit(registry: Registry, name: str, adapter_dir: Path | None, failures: list[str]) -> int:
    """A bias audit as `tunesmith audit bias` records it, reduced to what the gate reads."""
    report: dict[str, Any] = {
        "kind": "bias_audit", "pairs": 20, "data": {"path": "cf.jsonl", "hash": "c" * 64, "examples": 10},
        "target": {"name": name, "base_model": "tiny", "run_id": None,
                   "adapter_dir": str(adapter_dir) if adapter_dir else None},
        "gate": {"passed": not failures, "threshold": 0.1, "measures": ["refusal_flip"], "failures": failures},
    }  # fmt: skip
    return registry.record_evaluation(None, report, Path("bias_audit"))


@pytest.fixture
def store(tmp_path: Path) -> ServingStore:
    """voice@1 serving acme-voice; voice@2 and voice@3 registered, none of them audited."""
    store = ServingStore(Registry(default_database_url()).connect())
    for version in (1, 2, 3):
        store.register_adapter("voice", tmp_path / f"v{version}", "tiny", tenant="acme")
    store.create_deployment("acme-voice", [{"model": "voice@1", "weight": 100}], tenant="acme")
    return store


def test_promote_needs_a_passing_audit_of_exactly_that_version(store: ServingStore, tmp_path: Path) -> None:
    registry = store.registry
    with pytest.raises(BiasAuditRequired, match=r"voice@2 has no bias audit .*`tunesmith audit bias voice@2"):
        store.promote("acme-voice", "voice@2", require_bias_audit=True)
    record_audit(registry, "voice@3", tmp_path / "v3", [])  # another version's audit does not count
    passed = record_audit(registry, "voice@2", tmp_path / "v2", [])
    failed = record_audit(registry, "voice@2", tmp_path / "v2", [FAILURE])
    with pytest.raises(
        BiasAuditRequired, match=rf"failed its latest bias audit \(evaluation {failed},.*upper bound 0.519"
    ):
        store.promote("acme-voice", "voice@2", require_bias_audit=True)  # the latest decides  # fmt: skip
    again = record_audit(registry, "run-7", tmp_path / "v2", [])  # a run audited by id: matched by its folder
    assert store.promote("acme-voice", "voice@2", require_bias_audit=True) == {"voice@2": again}
    assert passed < failed < again and store.promote("acme-voice", "voice@1") == {}  # not required: no check
    (promoted,) = [r for r in read_log(registry) if r["action"] == "deployment.promote"][:1]
    assert promoted["after"]["bias_audits"] == {"voice@2": again}


def test_weights_need_an_audit_for_every_adapter_that_gets_traffic(
    store: ServingStore, tmp_path: Path
) -> None:
    record_audit(store.registry, "voice@2", tmp_path / "v2", [])
    canary: Any = [{"model": "voice@1", "weight": 90}, {"model": "voice@2", "weight": 10}]
    with pytest.raises(BiasAuditRequired, match="voice@1 has no bias audit"):
        store.set_weights("acme-voice", canary, require_bias_audit=True)
    parked: Any = [
        {"model": "voice@2", "weight": 100},
        {"model": "voice@1", "weight": 0},
        {"model": "base", "weight": 5},
    ]
    assert store.set_weights("acme-voice", parked, require_bias_audit=True) == {"voice@2": 1}  # fmt: skip


def test_the_cli_refuses_with_exit_2_and_the_reason(
    store: ServingStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["tunesmith", "deploy", "promote", "acme-voice", "voice@2", "--require-bias-audit"])  # fmt: skip
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2 and "run `tunesmith audit bias voice@2" in " ".join(
        capsys.readouterr().err.split()
    )
    record_audit(store.registry, "voice@2", tmp_path / "v2", [FAILURE])
    refused = CliRunner().invoke(app, ["deploy", "weights", "acme-voice", "-v", "voice@2=100", "--require-bias-audit"])  # fmt: skip
    assert isinstance(refused.exception, BiasAuditRequired) and "upper bound 0.519 above 0.1" in str(
        refused.exception
    )
    evaluation = record_audit(store.registry, "voice@2", tmp_path / "v2", [])
    shown = CliRunner().invoke(app, ["deploy", "promote", "acme-voice", "voice@2", "--require-bias-audit"])
    assert shown.exit_code == 0 and f"bias audit passed: voice@2 (evaluation {evaluation})" in shown.stdout


def test_the_admin_routes_take_the_same_requirement(store: ServingStore, tmp_path: Path) -> None:
    api = FastAPI()
    api.state.auth, api.state.store, api.state.require_bias_audit = True, store, False
    api.state.auth_failures, api.state.metrics = AuthFailureLimit(100, window_s=60), ServeMetrics()
    install_error_handlers(api)
    api.include_router(admin.router)
    client = TestClient(api, headers={"Authorization": f"Bearer {store.create_key(None, admin=True)}"})
    url = "/admin/deployments/acme-voice"
    refused = client.post(f"{url}/promote", json={"model": "voice@2", "require_bias_audit": True})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "bias_audit_required"
    assert "tunesmith audit bias voice@2" in refused.json()["error"]["message"]
    weights = {"variants": [{"model": "voice@2", "weight": 1}], "require_bias_audit": True}
    assert client.put(f"{url}/weights", json=weights).status_code == 409
    api.state.require_bias_audit = True  # `serve: {require_bias_audit: true}`: whatever the request says
    assert client.post(f"{url}/promote", json={"model": "voice@2"}).status_code == 409
    record_audit(store.registry, "voice@2", tmp_path / "v2", [])
    assert client.post(f"{url}/promote", json={"model": "voice@2"}).status_code == 200
    deployment = store.find_deployment(Caller(tenant=None, is_admin=True), "acme-voice")
    assert deployment is not None and deployment["variants"] == [{"model": "voice@2", "weight": 100.0}]
