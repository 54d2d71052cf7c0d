"""The loop's building steps without a model: the leakage filter against the frozen test set, the rows a
resumed cycle rebuilds, a killed training run resumed (a finished one read back), and a canary's weights
set once however often the step runs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tests.unit.loop.conftest import chat, policy_for
from tunesmith.audit.privacy import RequestLogMode
from tunesmith.loop.build import drop_test_leaks, train_candidate, training_rows
from tunesmith.loop.context import check_loop
from tunesmith.loop.policy import LoopPolicySpec
from tunesmith.loop.release import production_examples, start_canary
from tunesmith.loop.run import run_loop
from tunesmith.loop.states import LoopState
from tunesmith.registry.loop_store import LoopStore
from tunesmith.registry.serving_store import Caller, ServingStore
from tunesmith.registry.store import Registry
from tunesmith.train.records import TrainResult

ACME = Caller(tenant="acme", is_admin=False)


def test_rows_near_a_frozen_test_prompt_are_dropped() -> None:
    rows = [chat("when do you open on monday morning", "eight"), chat("do you deliver cakes to offices", "yes"),
            chat("Do you deliver cakes to offices", "yes"), chat("is there parking", "no")]  # fmt: skip
    kept, dropped = drop_test_leaks(
        rows, ["when do you open on monday morning please", "do you deliver cakes to offices"], 0.6
    )
    assert dropped == 3 and kept == [chat("is there parking", "no")]


def _correct(store: ServingStore, question: str) -> int:
    response = f"r-{question}"
    store.log_request(id=response, tenant="acme", endpoint="chat", requested_model="support", deployment="support",
                      variant="voice@1", user=None, prompt={"messages": [{"role": "user", "content": question}]},
                      outputs=["we open at eight"], finish_reasons=["stop"], prompt_tokens=1, completion_tokens=1,
                      latency_ms=1.0, ttft_ms=1.0)  # fmt: skip
    return store.record_feedback(ACME, response, correction="yes, daily")


def test_a_cycle_trains_on_the_feedback_its_trigger_saw(registry: Registry, tmp_path: Path) -> None:
    store = ServingStore(registry)
    seen = _correct(store, "do you deliver")
    _correct(store, "delivery on sunday")  # arrives after the trigger
    context = check_loop(registry, "support", policy_for(tmp_path))
    rows, sources = training_rows(context, seen)
    assert rows[-1]["messages"][-1]["content"] == "yes, daily" and sources["feedback_ids"] == [seen]
    assert (sources["original"], sources["corrections"]) == (8, 1) and sources["request_ids"] == [
        "r-do you deliver"
    ]


def test_a_killed_run_is_resumed_and_a_finished_one_read_back(
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cycle = run_loop(registry, "support", policy_for(tmp_path), now=True, until=LoopState.triggered).cycle
    assert cycle is not None
    dataset = write_jsonl(tmp_path / "rows.jsonl", [chat("q", "a")])
    cycle = LoopStore(registry).advance(
        cycle.id, "triggered", "dataset_built", {"path": str(dataset)}, "built"
    )
    context = check_loop(registry, "support", policy_for(tmp_path))
    out = context.workdir(cycle.id) / "run"
    out.mkdir(parents=True)
    (out / "status.json").write_text('{"run_id": "run-2", "status": "cancelled"}')  # a run killed mid-way
    calls: list[Path | None] = []

    def trainer(spec: Any, *, listener: Any, resume: Path | None, progress: bool) -> TrainResult:
        calls.append(resume)
        assert (spec.out, spec.init_adapter, spec.name, spec.max_steps) == (
            out,
            Path(context.champion.path),
            "voice",
            2,
        )
        registry.record_event("run-2", "created", "created", {"config": {"model": "tiny"}}, "2026-12-07")
        ServingStore(registry).register_adapter(
            "voice", out / "adapter", "tiny", tenant="acme", run_id="run-2"
        )
        result = TrainResult("run-2", str(out), "succeeded", "sft", "tiny", str(out / "adapter"), 2, 10, 1.0, 1.0,
                             10.0, 0.5, None, None, "h" * 64, None, 1, 0, "fp32", "cpu", 0.1, 64, False, "none")  # fmt: skip
        (out / "run.json").write_text(json.dumps(asdict(result)))
        return result

    monkeypatch.setattr("tunesmith.train.sft.train_sft", trainer)
    first = train_candidate(context, cycle)
    again = train_candidate(context, cycle)  # killed after training, before the state was committed
    assert calls == [out] and first == again
    assert (first["adapter"], first["run_id"], first["init_adapter"]) == ("voice@2", "run-2", "voice@1")


def test_a_canary_started_twice_changes_the_weights_once(registry: Registry, tmp_path: Path) -> None:
    store = ServingStore(registry)
    store.register_adapter("voice", tmp_path / "adapter-2", "tiny", tenant="acme", run_id="run-1")
    cycle = run_loop(registry, "support", policy_for(tmp_path), now=True, until=LoopState.triggered).cycle
    assert cycle is not None
    cycle = LoopStore(registry).advance(
        cycle.id, "triggered", "approved", {}, "as if gated", candidate="voice@2"
    )
    context = check_loop(registry, "support", policy_for(tmp_path), cycle.champion)
    for _ in range(2):  # a `loop run` killed after setting the weights, then resumed
        start_canary(context, cycle, None)
    history = store.find_deployment(Caller(tenant=None, is_admin=True), "support")["history"]  # type: ignore[index]
    assert [change["action"] for change in history] == ["create", "canary"]
    assert history[-1]["variants"] == [
        {"model": "voice@1", "weight": 90.0},
        {"model": "voice@2", "weight": 10.0},
    ]


def test_the_gate_judges_only_production_prompts_nobody_trained_on(
    registry: Registry, tmp_path: Path
) -> None:
    store = ServingStore(registry)
    _correct(store, "do you deliver")
    cycle = run_loop(registry, "support", policy_for(tmp_path), now=True, until=LoopState.triggered).cycle
    assert cycle is not None
    context = check_loop(registry, "support", policy_for(tmp_path))
    rows, sources = training_rows(context, cycle.lineage["triggered"]["feedback_id"])
    context.workdir(cycle.id).mkdir(parents=True)
    write_jsonl(context.workdir(cycle.id) / "dataset-rows.jsonl", rows)
    cycle = LoopStore(registry).advance(cycle.id, "triggered", "dataset_built", sources, "built")
    for index, question in enumerate(["do you deliver", "delivery on sunday", "delivery on sunday"]):
        store.log_request(
            id=f"later-{index}", tenant="acme", endpoint="chat", requested_model="support", deployment="support",
            variant="voice@1", user=None, prompt={"prompt": question}, outputs=["no"], finish_reasons=["stop"],
            prompt_tokens=1, completion_tokens=1, latency_ms=1.0, ttft_ms=1.0,
        )  # fmt: skip
    store.set_request_logging("acme", RequestLogMode.OFF)  # logged from now on without its text
    store.log_request(id="untold", tenant="acme", endpoint="chat", requested_model="support", deployment="support",
                      variant="voice@1", user=None, prompt={"prompt": "secret"}, outputs=["no"], finish_reasons=["stop"],
                      prompt_tokens=1, completion_tokens=1, latency_ms=1.0, ttft_ms=1.0)  # fmt: skip
    fresh = production_examples(context, cycle, 10)  # not the corrected one, nor its words asked again; once
    assert [example.prompt_messages()[-1]["content"] for example in fresh] == ["delivery on sunday"]
    assert fresh[0].reference() == "no"


def test_kto_trains_on_the_train_split_so_the_trainer_holds_out_both_labels(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = LoopPolicySpec.model_validate(
        {**policy_for(tmp_path).model_dump(), "train": {"objective": "kto"}}
    )
    cycle = LoopStore(registry).start("support", "voice@1", policy.model_dump(mode="json"), "dataset_built",
                                      {"path": str(tmp_path / "prepared")}, "built", open_states=set())  # fmt: skip
    seen: list[Any] = []

    def trainer(spec: Any, **options: Any) -> TrainResult:
        seen.append(spec)
        raise KeyboardInterrupt  # enough: the spec is what this test reads

    monkeypatch.setattr("tunesmith.train.kto.train_kto", trainer)
    with pytest.raises(KeyboardInterrupt):
        train_candidate(check_loop(registry, "support", policy), cycle)
    assert (seen[0].method, seen[0].data, seen[0].hold_out_val) == (
        "kto",
        tmp_path / "prepared" / "train.jsonl",
        True,
    )
