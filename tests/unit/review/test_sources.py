"""Review items from an evaluation's predictions and from a deployment's served requests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.audit.privacy import RequestLogMode
from tunesmith.config import ConfigError
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.review.records import HUMAN, ReviewKind
from tunesmith.review.sources import items_from_evaluation, items_from_requests
from tunesmith.review.store import ReviewStore

from .conftest import People, write_evaluation


def test_an_evaluation_gives_pairs_rubric_items_and_model_vs_human_items(tmp_path: Path) -> None:
    evaluation = write_evaluation(tmp_path / "eval", ["zero-shot", "few-shot", "acme@1"])
    pairs, source = items_from_evaluation(evaluation, ReviewKind.pairwise, examples=2)
    assert source["examples"] == [0, 3] and len(pairs) == 2 * 3  # evenly spaced examples, every pair
    assert [o["model"] for o in pairs[0].outputs] == ["zero-shot", "few-shot"]
    first = pairs[0].prompt
    assert first[-1]["role"] == "user" and first[-1]["content"].startswith(
        "Do you have a loyalty card"
    )  # not rendered
    rubric, _ = items_from_evaluation(evaluation, ReviewKind.rubric, models=["acme@1"])
    assert len(rubric) == 6 and rubric[5].outputs == [{"model": "acme@1", "text": "acme@1 answer 5"}]
    versus, _ = items_from_evaluation(evaluation, ReviewKind.model_vs_human)  # the last model: the candidate
    assert [o["model"] for o in versus[0].outputs] == ["acme@1", HUMAN]
    assert versus[0].outputs[1]["text"] == versus[0].reference
    with pytest.raises(ConfigError, match=r"no predictions of \['other'\]"):
        items_from_evaluation(evaluation, ReviewKind.pairwise, models=["acme@1", "other"])
    (evaluation / "test.jsonl").write_text((evaluation / "test.jsonl").read_text().splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match="changed since the evaluation"):
        items_from_evaluation(evaluation, ReviewKind.pairwise)


def test_model_vs_human_hides_the_reference_from_the_reviewer(
    tmp_path: Path, store: ReviewStore, people: People
) -> None:
    items, source = items_from_evaluation(
        write_evaluation(tmp_path / "eval", ["base", "acme@1"]), ReviewKind.model_vs_human
    )
    task = store.create(people.admin, "mvh", ReviewKind.model_vs_human, items, source=source, tenant="acme")
    view = store.next_item(task.id, people.alice)
    assert view is not None and view.reference is None and len(view.outputs) == 2
    assert task.models == ["acme@1", HUMAN]


def test_served_requests_give_a_seeded_sample(registry: Registry) -> None:
    serving = ServingStore(registry)
    serving.create_deployment("support", [{"model": "base", "weight": 1.0}], tenant="acme")
    serving.set_request_logging("acme", RequestLogMode.FULL)
    for index in range(8):
        serving.log_request(
            prompt={"messages": [{"role": "user", "content": f"question {index % 4}"}]}, outputs=[f"answer {index}"],
            id=f"r{index}", tenant="acme", endpoint="chat", requested_model="support", deployment="support",
            variant="base" if index < 4 else "acme@1", finish_reasons=["stop"], prompt_tokens=1, completion_tokens=1,
            latency_ms=1.0,
        )  # fmt: skip
    acme = Caller("acme", False)
    sampled, source = items_from_requests(serving, acme, "support", ReviewKind.rubric, sample=5, seed=3)
    again, _ = items_from_requests(serving, acme, "support", ReviewKind.rubric, sample=5, seed=3)
    assert sampled == again and len(sampled) == 5 and source["tenant"] == "acme"
    pairs, _ = items_from_requests(serving, acme, "support", ReviewKind.pairwise, sample=10)
    assert len(pairs) == 4 and all({o["model"] for o in item.outputs} == {"base", "acme@1"} for item in pairs)
    with pytest.raises(ConfigError, match="no deployment named support"):
        items_from_requests(serving, Caller("globex", False), "support", ReviewKind.rubric, sample=5)
