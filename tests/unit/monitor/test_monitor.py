"""Drift and output signals (pure), and `tunesmith monitor check/alerts` on a registry with traffic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.cli.common import UsageError
from tunesmith.config import ConfigError, default_database_url
from tunesmith.monitor.check import monitor_deployment
from tunesmith.monitor.drift import hashed_bag_of_words, permutation_drift_test
from tunesmith.monitor.signals import compare_windows, is_refusal, is_repetitive, window_signals
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_store import Caller, NotFoundError, ServingStore
from tunesmith.registry.store import Registry

runner = CliRunner()


def test_the_permutation_test_is_calibrated_and_sees_a_shift() -> None:
    rng = np.random.default_rng(0)
    p_values = [
        permutation_drift_test(rng.normal(size=(200, 8)), rng.normal(size=(50, 8)), permutations=99, seed=i)[
            0
        ]
        for i in range(200)
    ]
    assert 0.01 <= np.mean(np.asarray(p_values) < 0.05) <= 0.10  # exact test: 5% in expectation
    shifted = rng.normal(size=(50, 8)) + np.eye(8)[0] * 1.0
    assert permutation_drift_test(rng.normal(size=(200, 8)), shifted)[0] < 0.05
    rows = hashed_bag_of_words(["Hello hello world", ""], dim=64)
    assert np.isclose(np.linalg.norm(rows[0]), 1) and not rows[1].any()


def test_output_signals_and_a_rise_between_windows() -> None:
    assert is_refusal("I'm sorry, but I can't help with that") and not is_refusal("Sure, here it is")
    assert is_repetitive("the cat sat " * 10) and not is_repetitive("one two three four five six seven")

    def request(answer: str, reason: str = "stop") -> dict[str, object]:
        return {"outputs": [answer], "finish_reasons": [reason], "feedback": [], "latency_ms": 10.0,
                "completion_tokens": len(answer.split())}  # fmt: skip

    before = window_signals([request("a fine answer")] * 200)
    after = window_signals(
        [request("a fine answer")] * 150 + [request("")] * 30 + [request("cut", "length")] * 20
    )
    assert after["rates"]["empty"]["rate"] == 0.15 and after["rates"]["truncated"]["count"] == 20
    kinds = {alert["kind"] for alert in compare_windows(after, before)}
    assert kinds == {"empty_rate", "truncated_rate"}
    assert compare_windows(before, before) == []


def _log(store: ServingStore, i: int, question: str, answer: str, deployment: str = "cafe") -> None:
    store.log_request(
        id=f"r{i}", tenant=None, endpoint="chat", requested_model=deployment, deployment=deployment, variant="base",
        user=None, prompt={"messages": [{"role": "user", "content": question}]}, outputs=[answer],
        finish_reasons=["stop"], prompt_tokens=3, completion_tokens=3, latency_ms=20.0,
    )  # fmt: skip


def test_monitor_check_stores_alerts_that_monitor_alerts_lists() -> None:
    store = ServingStore(Registry(default_database_url()).connect())
    store.create_deployment("cafe", [{"model": "base", "weight": 1.0}], tenant=None)
    quiet = runner.invoke(app, ["monitor", "check", "cafe", "--window", "50", "--json"])
    assert quiet.exit_code == 0 and json.loads(quiet.output)["alerts"] == []  # no traffic: nothing to say
    coffee = ["do you have oat milk", "what time do you open", "is there wifi", "how much is a latte"]
    taxes = ["how do I file my tax return", "what is the deadline for taxes", "can I deduct my car"]
    for i in range(60):
        _log(store, i, coffee[i % 4], "yes we do")
    for i in range(60, 120):
        _log(store, i, taxes[i % 3], "")
    result = runner.invoke(app, ["monitor", "check", "cafe", "--window", "60", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {alert["kind"] for alert in report["alerts"]} == {"input_drift", "empty_rate"}
    listed = json.loads(runner.invoke(app, ["monitor", "alerts", "cafe", "--json"]).output)
    assert [alert["kind"] for alert in listed] == [alert["kind"] for alert in report["alerts"]]
    assert MonitorStore(store.registry).alert_counts()[("cafe", "input_drift")] == 1
    assert "alert" in runner.invoke(app, ["monitor", "check", "cafe", "--window", "60"]).output
    for bad in ("soon", "0"):
        refused = runner.invoke(app, ["monitor", "check", "cafe", "--every", bad])
        assert isinstance(refused.exception, UsageError) and "--every" in str(refused.exception)
    missing = runner.invoke(app, ["monitor", "check", "nothing"])
    assert isinstance(missing.exception, NotFoundError)  # `main` prints it as one line, exit code 2


def test_embedding_drift_runs_on_the_adapters_base_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    registry = Registry(default_database_url()).connect()
    store = ServingStore(registry)
    store.register_adapter("cafe", tmp_path / "adapter", str(tiny_model_dir), tenant=None)
    store.create_deployment("cafe", [{"model": "cafe@1", "weight": 1.0}], tenant=None)
    store.create_deployment("plain", [{"model": "base", "weight": 1.0}], tenant=None)
    for i in range(40):
        _log(
            store,
            i,
            ["is there wifi", "how much is a latte"][i % 2] if i < 20 else "file my tax return",
            "ok",
        )
        _log(store, 100 + i, "hello", "ok", deployment="plain")
    report = monitor_deployment(registry, "cafe", window=20, embeddings=True)
    tests = {(test["test"], test["against"]) for test in report["drift"]}
    assert tests == {("words", "previous window"), ("embeddings", "previous window")}
    with pytest.raises(ConfigError, match="--embeddings"):
        monitor_deployment(registry, "plain", window=20, embeddings=True)


def test_a_canary_worse_than_its_control_raises_an_alert(tmp_path: Path) -> None:
    registry = Registry(default_database_url()).connect()
    store = ServingStore(registry)
    for version in (1, 2):
        store.register_adapter("voice", tmp_path / f"v{version}", "base", tenant=None)
    store.create_deployment("voice", [{"model": "voice@1", "weight": 50.0}, {"model": "voice@2", "weight": 50.0}],
                            tenant=None)  # fmt: skip
    admin = Caller(tenant=None, is_admin=True)
    for i in range(300):
        variant = ("voice@1", "voice@2")[i % 2]
        store.log_request(
            id=f"r{i}", tenant=None, endpoint="chat", requested_model="voice", deployment="voice", variant=variant,
            user=None, prompt={"prompt": "hi"}, outputs=["ok"], finish_reasons=["stop"], prompt_tokens=1,
            completion_tokens=1, latency_ms=5.0,
        )  # fmt: skip
        up = (i % 10 < 9) if variant == "voice@1" else (i % 10 < 3)
        store.record_feedback(admin, f"r{i}", thumbs="up" if up else "down", rating=5 if up else 1)
    report = monitor_deployment(registry, "voice", window=100)
    worse = [alert for alert in report["alerts"] if alert["kind"] == "ab_worse"]
    assert worse and worse[0]["data"]["variant"] == "voice@2" and worse[0]["data"]["metric"] == "thumbs"
    assert "sample_ratio_mismatch" not in {alert["kind"] for alert in report["alerts"]}


def test_the_server_monitors_every_deployment_in_the_background(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`monitor_every` in the serve config: alerts appear without anyone running `monitor check`, and a
    deployment that cannot be checked does not stop the others; `monitor_judge` loads its judge once."""
    import time

    from fastapi.testclient import TestClient

    from tunesmith.config import MonitorJudgeSpec, ServeSpec
    from tunesmith.models.catalog import ModelNotFoundError
    from tunesmith.monitor import check
    from tunesmith.monitor.quality import SampledJudge
    from tunesmith.serve.app import create_app

    judges: list[SampledJudge | None] = []

    def failing_first(
        registry: Registry, name: str, window: int, judge: SampledJudge | None
    ) -> dict[str, object]:
        judges.append(judge)
        if name == "a-broken":
            raise RuntimeError("its base model is gone")
        return monitor_deployment(registry, name, window, judge=judge)

    monkeypatch.setattr(check, "monitor_deployment", failing_first)
    registry = Registry(default_database_url()).connect()
    store = ServingStore(registry)
    store.create_deployment("a-broken", [{"model": "base", "weight": 1.0}], tenant=None)
    store.create_deployment("cafe", [{"model": "base", "weight": 1.0}], tenant=None)
    for i in range(40):
        _log(store, i, "is there wifi", "yes" if i < 20 else "")  # the second window's answers are empty
    judged = MonitorJudgeSpec(model=str(tiny_model_dir), sample=3, criteria={"brief": "Is it short?"})
    spec = ServeSpec(model=str(tiny_model_dir), monitor_every=0.2, monitor_window=20, monitor_judge=judged)
    with TestClient(create_app(spec, registry)):
        deadline = time.monotonic() + 20
        while not MonitorStore(registry).alert_counts() and time.monotonic() < deadline:
            time.sleep(0.1)
    assert MonitorStore(registry).alert_counts().get(("cafe", "empty_rate"), 0) >= 1
    assert judges[0] is not None and judges[0].sample == 3 and all(judge is judges[0] for judge in judges)
    gone = spec.model_copy(update={"monitor_judge": MonitorJudgeSpec(model=str(tiny_model_dir / "gone"))})
    with pytest.raises(ModelNotFoundError, match="gone"), TestClient(create_app(gone, registry)):
        pass  # a judge that cannot load stops the start, not the monitor later


def test_requests_logged_without_their_text_count_in_the_rates_but_not_in_drift() -> None:
    """A tenant whose request log is `off` leaves `{}` as the prompt: no KeyError, and not in the drift."""
    from tunesmith.audit.privacy import RequestLogMode

    registry = Registry(default_database_url()).connect()
    store = ServingStore(registry)
    store.create_deployment("cafe", [{"model": "base", "weight": 1.0}], tenant=None)
    store.set_request_logging("acme", RequestLogMode.OFF)
    for i in range(40):
        store.log_request(
            id=f"r{i}", tenant="acme" if i % 4 == 0 else None, endpoint="chat", requested_model="cafe",
            deployment="cafe", variant="base", user=None, prompt={"messages": [{"role": "user", "content": "is there wifi"}]},
            outputs=["yes we do"], finish_reasons=["length" if i >= 20 else "stop"], prompt_tokens=3,
            completion_tokens=3, latency_ms=20.0,
        )  # fmt: skip
    report = monitor_deployment(registry, "cafe", window=20)
    assert report["not_logged"] == 5 and report["signals"]["requests"] == 20
    assert report["signals"]["rates"]["truncated"] == {"count": 20, "n": 20, "rate": 1.0}  # every request
    assert report["signals"]["rates"]["empty"]["n"] == 15  # answers: only the logged ones
    assert [test["against"] for test in report["drift"]] == ["previous window"]
    assert report["languages"]["prompts"]["en"]["n"] == 15
    assert {alert["kind"] for alert in report["alerts"]} == {"truncated_rate"}
    shown = runner.invoke(app, ["monitor", "check", "cafe", "--window", "20"]).output
    assert "5 requests logged without their text" in shown and "prompts by language: en 100%" in shown
