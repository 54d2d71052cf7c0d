"""The A/B report on synthetic traffic, and `tunesmith ab report` on a registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import default_database_url
from tunesmith.monitor.ab import ab_report, load_ab_report
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_store import Caller, NotFoundError, ServingStore
from tunesmith.registry.store import Registry

VARIANTS: list[Any] = [{"model": "voice@1", "weight": 50.0}, {"model": "voice@2", "weight": 50.0}]


def _traffic(rates: dict[str, float], requests: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    models = list(rates)
    traffic = []
    for i in range(requests):
        model = models[i % len(models)]
        up = bool(rng.random() < rates[model])
        traffic.append({
            "id": f"r{i}", "variant": model, "user": None, "created_at": "", "outputs": ["x"], "finish_reasons": ["stop"],
            "feedback": [{"rating": 5 if up else 1, "thumbs": "up" if up else "down", "preferred_over": None,
                          "ranking": None}],
            "outcomes": [{"name": "click", "value": None}] if up else [],
        })  # fmt: skip
    return traffic


def test_a_clearly_better_variant_is_called_better_with_intervals() -> None:
    report = ab_report(_traffic({"voice@1": 0.5, "voice@2": 0.7}, 4000), VARIANTS)
    control, candidate = report["variants"]
    assert report["control"] == "voice@1" and control["requests"] == candidate["requests"] == 2000
    assert candidate["thumbs_up"]["rate"] == pytest.approx(0.7, abs=0.03)
    low, high = candidate["outcomes"]["click"]["interval"]
    assert low < candidate["outcomes"]["click"]["rate"] < high
    thumbs = candidate["versus_control"]["thumbs"]
    assert thumbs["verdict"] == "better" and thumbs["interval"][0] > 0 and thumbs["p_value"] < 0.05
    assert report["verdict"] == "better" and not report["sample_ratio"]["mismatch"]


def test_equal_variants_keep_collecting_with_an_estimate_of_samples_needed() -> None:
    report = ab_report(_traffic({"voice@1": 0.6, "voice@2": 0.6}, 400, seed=3), VARIANTS)
    comparison = report["variants"][1]["versus_control"]["thumbs"]
    assert comparison["verdict"] == "keep collecting" and report["verdict"] == "keep collecting"
    assert comparison["samples_to_decide"] is None or comparison["samples_to_decide"] > 400


def test_a_lopsided_split_is_flagged_and_overrides_the_verdict() -> None:
    traffic = [r for r in _traffic({"voice@1": 0.5, "voice@2": 0.7}, 4000) if r["variant"] == "voice@1"]
    traffic += _traffic({"voice@2": 0.7}, 1000)
    report = ab_report(traffic, VARIANTS)
    assert report["sample_ratio"]["mismatch"] and report["verdict"].startswith("sample ratio mismatch")


def test_no_traffic_unknown_control_and_pairwise_wins() -> None:
    empty = ab_report([], VARIANTS)
    assert empty["verdict"] == "no traffic yet"
    assert empty["variants"][1]["versus_control"]["thumbs"]["difference"] is None
    with pytest.raises(NotFoundError, match="--control"):
        ab_report([], VARIANTS, control="voice@9")
    traffic = _traffic({"voice@1": 0.5, "voice@2": 0.5}, 4)
    traffic[1]["feedback"].append({"rating": None, "thumbs": None, "preferred_over": "r0", "ranking": None})
    traffic[3]["feedback"].append({"rating": None, "thumbs": None, "preferred_over": None,
                                   "ranking": ["r3", "r2", "r1"]})  # fmt: skip
    pairwise = {v["model"]: v["pairwise"] for v in ab_report(traffic, VARIANTS)["variants"]}
    assert pairwise == {"voice@1": {"wins": 1, "losses": 2}, "voice@2": {"wins": 2, "losses": 1}}


def test_ab_report_command_reads_the_current_experiment(tmp_path: Path) -> None:
    registry = Registry(default_database_url()).connect()
    store, monitor = ServingStore(registry), MonitorStore(registry)
    for version in (1, 2):
        store.register_adapter("voice", tmp_path / f"v{version}", "base", tenant=None)
    store.create_deployment("voice", VARIANTS, tenant=None)
    for i, model in enumerate(["voice@1", "voice@2"] * 3):
        store.log_request(
            id=f"r{i}", tenant=None, endpoint="chat", requested_model="voice", deployment="voice", variant=model,
            user=None, prompt={"prompt": "hi"}, outputs=["hello"], finish_reasons=["stop"], prompt_tokens=1,
            completion_tokens=1, latency_ms=5.0,
        )  # fmt: skip
    admin = Caller(tenant=None, is_admin=True)
    store.record_feedback(admin, "r1", rating=5, thumbs="up")
    monitor.record_outcome(admin, "r1", "conversion", 30.0)
    result = CliRunner().invoke(app, ["ab", "report", "voice", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["requests"] == 6 and report["variants"][1]["outcomes"]["conversion"]["value_sum"] == 30.0
    plain = CliRunner().invoke(app, ["ab", "report", "voice"])
    assert plain.exit_code == 0 and "verdict: keep collecting" in plain.output
    store.set_weights("voice", [{"model": "voice@1", "weight": 90.0}, {"model": "voice@2", "weight": 10.0}])
    assert load_ab_report(registry, "voice")["requests"] == 0  # a new split is a new experiment
    with pytest.raises(NotFoundError):
        load_ab_report(registry, "nothing")


def test_the_sample_ratio_counts_users_not_a_regulars_every_request() -> None:
    traffic = _traffic({"voice@1": 0.5, "voice@2": 0.5}, 200)
    for request in traffic:
        request["user"] = request["id"]
    for i in range(300):  # one regular on voice@2 (sticky) sends many requests
        traffic.append({**traffic[1], "id": f"regular{i}", "user": "regular"})
    assert not ab_report(traffic, VARIANTS)["sample_ratio"]["mismatch"]
