"""The improvement loop end to end on the tiny model: a champion serving a deployment, corrections on the
questions it gets wrong, then three cycles. A candidate trained on swapped answers is blocked at the gate;
a good one that passes the gate but loses its canary is rolled back (after a `--until` stop resumed
without redoing the dataset); a good one a person approves wins its canary and is promoted. Every step
is a registry state with an audit record and lineage.

The task: questions about opening hours are answered "we open at eight", questions about delivery
"yes, delivery daily". The champion learned only the first; production asks the second and people
correct it.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import write_jsonl
from tunesmith.audit.trail import read_log, verify_registry
from tunesmith.cli import app
from tunesmith.config import LoraSpec, TrainSpec, default_database_url
from tunesmith.loop import build
from tunesmith.loop.policy import load_policy
from tunesmith.loop.run import decide_approval, loop_status, run_loop
from tunesmith.loop.states import LoopState
from tunesmith.registry.serving_store import Caller, ServingStore
from tunesmith.registry.store import Registry
from tunesmith.train.sft import train_sft

HOURS = ["what time do you open", "when do you open", "opening hours please", "are you open early",
         "what are your hours", "when does the cafe open", "hours on monday", "hours on friday"]  # fmt: skip
DELIVERY = ["do you deliver", "can you deliver to me", "delivery to my office", "is delivery free",
            "how fast is delivery", "deliver on weekends", "delivery area", "can I get delivery",
            "delivery tonight", "do you deliver cakes", "delivery by bike", "any delivery fee"]  # fmt: skip
UNCORRECTED = ["deliver to the park", "delivery on sunday", "what time on saturday", "hours at christmas"]
TEST_HOURS = ["tell me the opening time", "at what hour can I come in", "is the door open at seven",
              "morning hours", "which time do doors open", "open at what time tomorrow", "first coffee when",
              "earliest time to visit", "time you start serving", "when can I come by"]  # fmt: skip
TEST_DELIVERY = ["bring an order to my flat", "send food to my house", "deliveries to the station",
                 "courier for my order", "deliver a box of pastries", "do you send orders out",
                 "delivering to my school", "drop off my order", "delivery for a party", "deliver bread"]  # fmt: skip
OPEN, DELIVER = "we open at eight", "yes, delivery daily"
ACME = Caller(tenant="acme", is_admin=False)


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _serve(store: ServingStore, variant: str, question: str, answer: str, user: str | None = None) -> str:
    """A request the deployment answered (as the server logs it), returning its id."""
    response_id = f"chatcmpl-{uuid.uuid4().hex}"
    store.log_request(
        id=response_id, tenant="acme", endpoint="chat", requested_model="support", deployment="support",
        variant=variant, user=user, prompt={"messages": [{"role": "user", "content": question}]},
        outputs=[answer], finish_reasons=["stop"], prompt_tokens=5, completion_tokens=5, latency_ms=10.0, ttft_ms=5.0,
    )  # fmt: skip
    return response_id


def _canary_traffic(
    store: ServingStore, champion: str, candidate: str, up_rates: tuple[float, float], users: range
) -> None:
    """`users` split 90/10 as the canary's weights say, each thumbing their answer up or down."""
    rng = random.Random(users.start)
    for index in users:
        variant, rate = (candidate, up_rates[1]) if index % 10 == 0 else (champion, up_rates[0])
        response = _serve(store, variant, HOURS[index % len(HOURS)], OPEN, user=f"user-{index}")
        store.record_feedback(ACME, response, thumbs="up" if rng.random() < rate else "down")


def _swapped(real: Any) -> Any:
    """`training_rows` with every answer swapped for the other topic's (hours questions answered with the
    delivery reply and the other way round): a deliberately bad candidate. Shuffling was not bad enough
    once the candidate continued the champion's adapter: half the delivery rows kept their right answer,
    which the champion never gave."""

    def rows(context: Any, feedback_id: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        made, sources = real(context, feedback_id)
        wrong = {OPEN: DELIVER, DELIVER: OPEN}
        return [
            _chat(row["messages"][0]["content"], wrong[row["messages"][-1]["content"]]) for row in made
        ], sources

    return rows


def _policy(path: Path, frozen: Path, model: Path, **extra: Any) -> Path:
    policy = {
        "trigger": {"on_alert": False, "min_feedback": 12},
        "data": {"near_dup_threshold": None},
        "train": {"overrides": {"max_steps": 80, "lr": 5e-3}},  # the candidate continues the champion: a gentler lr
        "gate": {"metric": "rouge_l", "metrics": ["rouge_l", "rouge_1", "exact_match"], "tolerance": 0.05,
                 "frozen_test": str(frozen), "max_new_tokens": 8, "bootstrap_samples": 200,
                 "production_sample": 4, "judge": {"model": str(model)}},
        "canary": {"weight": 10, "metric": "thumbs", "max_requests": 500},
        **extra,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


def test_bad_candidate_blocked_canary_loser_rolled_back_good_one_promoted(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(default_database_url()).connect()
    store = ServingStore(registry)
    champion_rows = [_chat(f"{q} {n}", OPEN) for q in HOURS for n in range(2)]
    spec = TrainSpec(model=str(tiny_model_dir), data=write_jsonl(tmp_path / "hours.jsonl", champion_rows),
                     max_steps=60, batch_size=8, lr=1e-2, lora=LoraSpec(dropout=0.0), hold_out_val=False,
                     save_every=1000, eval_every=1000, name="voice", out=tmp_path / "champion")  # fmt: skip
    champion = train_sft(spec, listener=registry.run_listener("voice"), progress=False)
    assert store.register_source("voice", champion.run_id, tenant="acme").key == "voice@1"
    store.create_deployment("support", [{"model": "voice@1", "weight": 100}], tenant="acme")
    for (
        question
    ) in DELIVERY:  # production asks about delivery; the champion answers with hours; people correct it
        response = _serve(store, "voice@1", question, OPEN)
        store.record_feedback(ACME, response, thumbs="down", correction=DELIVER)
    for question in UNCORRECTED:  # the fresh production prompts the gate's judge sees
        _serve(store, "voice@1", question, OPEN)
    frozen = write_jsonl(tmp_path / "frozen.jsonl", [_chat(q, OPEN) for q in TEST_HOURS] +
                         [_chat(q, DELIVER) for q in TEST_DELIVERY])  # fmt: skip
    policy = load_policy(_policy(tmp_path / "loop.yaml", frozen, tiny_model_dir))

    # cycle 1: trained on swapped answers, blocked at the gate; the deployment never changes
    with monkeypatch.context() as patch:
        patch.setattr(build, "training_rows", _swapped(build.training_rows))
        blocked = run_loop(registry, "support", policy).cycle
    assert blocked is not None and blocked.state == LoopState.blocked, blocked
    assert blocked.reason is not None and "rouge_l" in blocked.reason
    assert blocked.lineage["triggered"]["new_feedback"] == len(DELIVERY)
    assert _variants(store) == [("voice@1", 100.0)]
    assert run_loop(registry, "support", policy).cycle is None  # no new feedback since: no trigger

    # cycle 2: stopped after the dataset, resumed; a good candidate passes the gate, loses the canary
    stopped = run_loop(registry, "support", policy, now=True, until=LoopState.dataset_built).cycle
    assert stopped is not None and stopped.state == LoopState.dataset_built
    waiting = run_loop(registry, "support", policy)
    assert waiting.cycle is not None and waiting.cycle.state == LoopState.canary, waiting
    assert waiting.cycle.id == stopped.id and "no thumbs observations" in waiting.note
    states = [event["state"] for event in loop_status(registry, loop_id=stopped.id)[0]["history"]]
    assert states == ["triggered", "dataset_built", "candidate_trained", "gated", "canary"]  # nothing redone
    candidate = waiting.cycle.candidate
    assert candidate == "voice@3" and _variants(store) == [("voice@1", 90.0), ("voice@3", 10.0)]
    _canary_traffic(store, "voice@1", candidate, up_rates=(0.9, 0.1), users=range(200))
    lost = run_loop(registry, "support", policy).cycle
    assert lost is not None and lost.state == LoopState.rolled_back and "worse" in str(lost.reason)
    assert _variants(store) == [("voice@1", 100.0)]

    # cycle 3: approval required; approved; wins its canary; promoted
    approval = load_policy(_policy(tmp_path / "approve.yaml", frozen, tiny_model_dir, require_approval=True))
    held = run_loop(registry, "support", approval, now=True).cycle
    assert (
        held is not None
        and held.state == LoopState.awaiting_approval
        and _variants(store) == [("voice@1", 100.0)]
    )
    decide_approval(registry, held.id, True, "looks right", None)
    running = run_loop(registry, "support", approval).cycle
    assert running is not None and running.state == LoopState.canary and running.candidate == "voice@4"
    _canary_traffic(store, "voice@1", "voice@4", up_rates=(0.3, 0.95), users=range(200, 400))
    watching = run_loop(registry, "support", approval)  # always valid: looking early costs nothing
    assert watching.cycle is not None and watching.cycle.state == LoopState.canary
    assert "keep collecting" in watching.note and "observations in all to decide" in watching.note
    _canary_traffic(store, "voice@1", "voice@4", up_rates=(0.3, 0.95), users=range(400, 600))
    won = run_loop(registry, "support", approval).cycle
    assert won is not None and won.state == LoopState.promoted, won
    assert _variants(store) == [("voice@4", 100.0)]

    # lineage: the promoted version names its run, the run its dataset, the gate its evaluation
    lineage = won.lineage
    assert lineage["candidate_trained"]["dataset"] == lineage["dataset_built"]["dataset"]
    assert lineage["candidate_trained"]["init_adapter"] == "voice@1"
    assert registry.get_run(lineage["candidate_trained"]["run_id"])["adapters"][0]["version"] == 4
    assert set(lineage["dataset_built"]["feedback_ids"]) == {item["id"] for item in store.list_feedback()
                                                             if item["correction"]}  # fmt: skip
    assert lineage["dataset_built"]["original"] == len(champion_rows)
    assert lineage["gated"]["evaluation_id"] and all(check["passed"] for check in lineage["gated"]["checks"])
    audit = [(record["action"], record["target"]) for record in read_log(registry)]
    for state in ["triggered", "dataset_built", "candidate_trained", "gated", "awaiting_approval", "approved",
                  "canary", "promoted"]:  # fmt: skip
        assert (f"loop.{state}", f"loop:{won.id}") in audit
    assert ("loop.blocked", f"loop:{blocked.id}") in audit and (
        "loop.rolled_back",
        f"loop:{lost.id}",
    ) in audit
    assert ("deployment.canary", "support") in audit and ("deployment.promote", "support") in audit
    assert verify_registry(registry).bad_id is None

    shown = CliRunner().invoke(app, ["loop", "status", str(won.id)])
    assert shown.exit_code == 0 and "promoted" in shown.output, shown.output


def _variants(store: ServingStore) -> list[tuple[str, float]]:
    found = store.find_deployment(Caller(tenant=None, is_admin=True), "support")
    assert found is not None
    return [(variant["model"], variant["weight"]) for variant in found["variants"]]
