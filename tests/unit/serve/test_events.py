"""`POST /v1/events` through the route, the auth dependency and the store (no model: only the events
router is mounted), and the store's reads of a deployment's traffic."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_store import Caller, NotFoundError, ServingStore
from tunesmith.serve.errors import install_error_handlers
from tunesmith.serve.limits import AuthFailureLimit
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.routes import events, ops

ACME = Caller(tenant="acme", is_admin=False)


def _log(store: ServingStore, response_id: str, tenant: str | None, variant: str = "base") -> None:
    store.log_request(
        id=response_id, tenant=tenant, endpoint="chat", requested_model="voice", deployment="voice",
        variant=variant, user=None, prompt={"prompt": "hi"}, outputs=["hello"], finish_reasons=["stop"],
        prompt_tokens=1, completion_tokens=1, latency_ms=5.0,
    )  # fmt: skip


@pytest.fixture()
def client(store: ServingStore) -> tuple[TestClient, ServingStore, dict[str, str]]:
    app = FastAPI()
    app.state.auth = True
    app.state.auth_failures = AuthFailureLimit(100, window_s=60)
    app.state.store = store
    app.state.metrics = ServeMetrics()
    app.state.monitor_store = MonitorStore(store.registry)
    install_error_handlers(app)
    app.include_router(events.router)
    app.include_router(ops.router)
    keys = {tenant: store.create_key(tenant, admin=False) for tenant in ("acme", "globex")}
    return TestClient(app), store, keys


def test_an_outcome_is_stored_on_the_callers_own_response(
    client: tuple[TestClient, ServingStore, dict[str, str]],
) -> None:
    http, store, keys = client
    _log(store, "chatcmpl-1", "acme")
    acme = {"Authorization": f"Bearer {keys['acme']}"}
    created = http.post("/v1/events", json={"response_id": "chatcmpl-1", "name": "conversion", "value": 12.5},
                        headers=acme)  # fmt: skip
    assert created.status_code == 201 and created.json()["object"] == "event"
    assert MonitorStore(store.registry).list_outcomes("chatcmpl-1") == [
        {"id": 1, "response_id": "chatcmpl-1", "tenant": "acme", "name": "conversion", "value": 12.5}
    ]
    globex = {"Authorization": f"Bearer {keys['globex']}"}
    foreign = http.post("/v1/events", json={"response_id": "chatcmpl-1", "name": "click"}, headers=globex)
    unknown = http.post("/v1/events", json={"response_id": "nope", "name": "click"}, headers=acme)
    assert foreign.status_code == unknown.status_code == 404  # foreign and missing look the same
    assert unknown.json()["error"]["code"] == "response_not_found"
    assert http.post("/v1/events", json={"response_id": "chatcmpl-1", "name": "click"}).status_code == 401
    for bad in ({"response_id": "chatcmpl-1"}, {"response_id": "chatcmpl-1", "name": "a b"},
                {"response_id": "chatcmpl-1", "name": "click", "extra": 1}):  # fmt: skip
        assert http.post("/v1/events", json=bad, headers=acme).status_code == 400
    assert len(MonitorStore(store.registry).list_outcomes()) == 1  # nothing half-stored


def test_deployment_traffic_joins_feedback_and_outcomes(store: ServingStore) -> None:
    monitor = MonitorStore(store.registry)
    _log(store, "r1", "acme", "voice@1")
    _log(store, "r2", "acme", "voice@2")
    store.record_feedback(ACME, "r1", rating=5, thumbs="up")
    monitor.record_outcome(ACME, "r2", "click", None)
    traffic = monitor.deployment_traffic("voice")
    assert [(r["id"], r["variant"]) for r in traffic] == [("r1", "voice@1"), ("r2", "voice@2")]
    assert traffic[0]["feedback"][0]["thumbs"] == "up" and traffic[1]["outcomes"] == [
        {"name": "click", "value": None}
    ]
    assert monitor.deployment_traffic("nothing") == []
    with pytest.raises(NotFoundError):
        monitor.record_outcome(Caller(tenant="globex", is_admin=False), "r1", "click", None)


def test_metrics_export_stored_alerts(client: tuple[TestClient, ServingStore, dict[str, str]]) -> None:
    http, store, _ = client
    MonitorStore(store.registry).record_alert("voice", "input_drift", "prompts moved", {})
    admin = {"Authorization": f"Bearer {store.create_key(None, admin=True)}"}
    text = http.get("/metrics", headers=admin).text
    assert 'tunesmith_monitor_alerts{deployment="voice",kind="input_drift"} 1.0' in text
