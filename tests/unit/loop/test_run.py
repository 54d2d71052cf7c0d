"""The loop's state machine without a model: bad input refused with nothing started, one open cycle per
deployment, moves only from the state a cycle is in, each move audited, and a failed step resumed."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any

import pytest

from tests.unit.loop.conftest import policy_for
from tunesmith.audit.trail import read_log
from tunesmith.config import ConfigError, tunesmith_home
from tunesmith.loop import run as loop_run
from tunesmith.loop.policy import LoopPolicySpec
from tunesmith.loop.run import cancel_cycle, decide_approval, loop_status, run_loop
from tunesmith.loop.states import OPEN, LoopState
from tunesmith.registry.loop_store import LoopStore
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_store import Caller, ServingStore
from tunesmith.registry.store import Registry


def test_bad_input_is_refused_with_nothing_started(registry: Registry, tmp_path: Path) -> None:
    store, policy = ServingStore(registry), policy_for(tmp_path)
    store.create_deployment("plain", [{"model": "base", "weight": 100}], tenant="acme")
    store.create_deployment(
        "split", [{"model": "voice@1", "weight": 50}, {"model": "base", "weight": 50}], tenant="acme"
    )
    store.register_adapter("folder", tmp_path / "elsewhere", "tiny", tenant="acme")
    store.create_deployment("unrecorded", [{"model": "folder@1", "weight": 100}], tenant="acme")
    before = len(read_log(registry))
    refused = {
        "nope": (policy, "no deployment named nope"),
        "plain": (policy, "serves the base model: it has no champion adapter"),
        "split": (policy, "splits traffic between voice@1, base"),
        "unrecorded": (policy, "registered from a folder, not trained by a recorded run"),
        "support": (policy_for(tmp_path, metric="accuracy"), "gate.metric: 'accuracy' is not scored on a generation task"),
    }  # fmt: skip
    for deployment, (given, message) in refused.items():
        with pytest.raises(ConfigError, match=message):
            run_loop(registry, deployment, given, now=True)
    unscored = policy_for(tmp_path, tolerances={"bleu_4": 1.0})
    no_frozen = LoopPolicySpec.model_validate({"gate": {"metric": "rouge_l"}})
    bad_lr = LoopPolicySpec.model_validate(
        {**policy_for(tmp_path).model_dump(), "train": {"overrides": {"lr": -1}}}
    )
    dpo = LoopPolicySpec.model_validate({**policy_for(tmp_path).model_dump(), "train": {"objective": "dpo"}})
    kto = LoopPolicySpec.model_validate({**policy_for(tmp_path).model_dump(), "train": {"objective": "kto"}})
    response = "r-thumbs"
    store.log_request(id=response, tenant="acme", endpoint="chat", requested_model="support", deployment="support",
                      variant="voice@1", user=None, prompt={"prompt": "hi"}, outputs=["we open at eight"],
                      finish_reasons=["stop"], prompt_tokens=1, completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)  # fmt: skip
    store.record_feedback(Caller(tenant="acme", is_admin=False), response, thumbs="down")  # bad answers only
    for given, message in [(unscored, "gate.tolerances"), (no_frozen, "gate.frozen_test: the champion trained on"),
                           (bad_lr, "training settings.*lr"), (dpo, "no preference feedback"),
                           (kto, "not both good and bad rated answers")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            run_loop(registry, "support", given, now=True)
    assert LoopStore(registry).cycles() == [] and len(read_log(registry)) == before


def test_no_trigger_no_cycle_and_one_open_cycle_per_deployment(registry: Registry, tmp_path: Path) -> None:
    policy, monitor = policy_for(tmp_path), MonitorStore(registry)
    assert run_loop(registry, "support", policy).cycle is None  # no alert, no feedback, no schedule
    monitor.record_alert("support", "ab_worse", "a canary lost", {})  # about an experiment, not the champion
    assert run_loop(registry, "support", policy).cycle is None
    drift = monitor.record_alert("support", "input_drift", "prompts moved", {})
    started = run_loop(registry, "support", policy, until=LoopState.triggered).cycle
    assert started is not None and started.state == LoopState.triggered
    trigger = started.lineage["triggered"]
    assert trigger["reasons"] == ["1 monitoring alerts since the last cycle (input_drift)"]
    assert trigger["alerts"] == [drift] and trigger["alert_id"] == drift
    with pytest.raises(ConfigError, match="already has loop"):
        LoopStore(registry).start("support", "voice@1", {}, "triggered", {}, "again", open_states=set(OPEN))
    with pytest.raises(ConfigError, match="is triggered, not canary"):
        LoopStore(registry).advance(started.id, "canary", "promoted", {}, "racing")
    with pytest.raises(ConfigError, match="not awaiting approval"):
        decide_approval(registry, started.id, True, None, None)


def test_a_failed_step_leaves_the_last_state_and_the_next_run_resumes_it(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*args: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(loop_run, "build_dataset", killed)
    with pytest.raises(KeyboardInterrupt):
        run_loop(registry, "support", policy_for(tmp_path), now=True)
    (cycle,) = LoopStore(registry).cycles("support")
    assert cycle.state == LoopState.triggered
    monkeypatch.setattr(
        loop_run, "build_dataset", lambda context, cycle: {"dataset": "d" * 64, "splits": {"train": 8}}
    )
    resumed = run_loop(registry, "support", policy_for(tmp_path), until=LoopState.dataset_built).cycle
    assert resumed is not None and resumed.id == cycle.id and resumed.state == LoopState.dataset_built
    (status,) = loop_status(registry, "support")
    history = [(event["state"], event["message"]) for event in status["history"]]
    assert history[:2] == [("triggered", history[0][1]), ("triggered", "step failed: cancelled")]
    assert [state for state, _ in history[2:]] == ["dataset_built"]  # the trigger was not redone
    audit = [r for r in read_log(registry) if r["target"] == f"loop:{cycle.id}"]
    assert [(r["action"], r["before"]) for r in audit] == [
        ("loop.triggered", None),
        ("loop.step_failed", {"state": "triggered"}),
        ("loop.dataset_built", {"state": "triggered"}),
    ]
    assert audit[2]["after"]["dataset"] == "d" * 64 and audit[2]["after"]["champion"] == "voice@1"


def test_cancel_rejects_before_the_canary_and_rolls_back_during_it(
    registry: Registry, tmp_path: Path
) -> None:
    store, loops = ServingStore(registry), LoopStore(registry)
    first = run_loop(registry, "support", policy_for(tmp_path), now=True, until=LoopState.triggered).cycle
    assert first is not None
    assert cancel_cycle(registry, first.id, "wrong data", None).state == LoopState.rejected
    with pytest.raises(ConfigError, match="already ended"):
        cancel_cycle(registry, first.id, None, None)
    store.register_adapter("voice", tmp_path / "adapter-2", "tiny", tenant="acme", run_id="run-1")
    second = run_loop(registry, "support", policy_for(tmp_path), now=True, until=LoopState.triggered).cycle
    assert second is not None
    loops.advance(second.id, "triggered", "canary", {}, "canary", candidate="voice@2")  # as if it ran
    store.set_weights("support", [{"model": "voice@1", "weight": 90}, {"model": "voice@2", "weight": 10}])
    ended = cancel_cycle(registry, second.id, "pager", None)
    assert ended.state == LoopState.rolled_back and ended.reason == "rolled back to voice@1: cancelled: pager"
    deployment = store.find_deployment(Caller(tenant=None, is_admin=True), "support")
    assert deployment is not None and deployment["variants"] == [{"model": "voice@1", "weight": 100.0}]


def test_a_second_loop_run_on_the_deployment_stops(registry: Registry, tmp_path: Path) -> None:
    lock = tunesmith_home() / "loops" / "support.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a first `loop run` holds it
        with pytest.raises(ConfigError, match="another `tunesmith loop run` is working on support"):
            run_loop(registry, "support", policy_for(tmp_path), now=True)
    assert LoopStore(registry).cycles() == []
    assert run_loop(registry, "support", policy_for(tmp_path), now=True, until=LoopState.triggered).cycle


@pytest.mark.parametrize(
    ("by_hand", "state"),
    [
        ([("voice@2", 100.0)], LoopState.promoted),
        ([("voice@1", 50.0), ("voice@2", 50.0)], LoopState.rolled_back),
    ],
)
def test_weights_a_person_changes_during_the_canary_end_it_and_stay(
    registry: Registry, tmp_path: Path, by_hand: list[tuple[str, float]], state: LoopState
) -> None:
    store, loops = ServingStore(registry), LoopStore(registry)
    store.register_adapter("voice", tmp_path / "adapter-2", "tiny", tenant="acme", run_id="run-1")
    cycle = run_loop(registry, "support", policy_for(tmp_path), now=True, until=LoopState.triggered).cycle
    assert cycle is not None
    canary = [{"model": "voice@1", "weight": 90.0}, {"model": "voice@2", "weight": 10.0}]
    loops.advance(cycle.id, "triggered", "canary", {"variants": canary}, "canary", candidate="voice@2")
    variants: Any = [{"model": model, "weight": weight} for model, weight in by_hand]
    store.set_weights("support", variants)
    ended = run_loop(registry, "support", policy_for(tmp_path)).cycle
    assert ended is not None and ended.state == state and ended.lineage[state]["by_hand"]
    deployment = store.find_deployment(Caller(tenant=None, is_admin=True), "support")
    assert deployment is not None and deployment["variants"] == variants
