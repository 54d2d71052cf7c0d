"""A task's results from judgements: simulated reviewers of known accuracy, rubric means, model vs human."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from tunesmith.review.records import BOTH_BAD, HUMAN, TIE, Judgement, ReviewKind, ReviewTask, TaskStatus
from tunesmith.review.results import compute_results

NOW = datetime.now(UTC)


def _task(
    kind: ReviewKind, models: list[str], reviewers: int, rubric: dict[str, object] | None = None
) -> ReviewTask:
    return ReviewTask(1, "t", None, kind, rubric, {}, reviewers, TaskStatus.open, "user:me", NOW, 0, models)


def _item(item_id: int, models: list[str]) -> dict[str, object]:
    return {"id": item_id, "prompt": [{"role": "user", "content": f"prompt {item_id}"}], "reference": None,
            "outputs": [{"model": m, "text": f"{m} {item_id}"} for m in models], "source": {}}  # fmt: skip


def _judged(item_id: int, reviewer: str, shown: list[str], preferred: str | None = None,
            scores: dict[str, int] | None = None) -> Judgement:  # fmt: skip
    return Judgement(0, 1, item_id, reviewer, None, shown, None, preferred, scores, None, None, None, NOW)


def _simulate_pairwise(accuracy: float, seed: int) -> tuple[list[dict[str, object]], list[Judgement]]:
    """3 reviewers judge every pair of 4 models on 30 prompts; the stronger model is truly better."""
    strength = {"m1": 3, "m2": 2, "m3": 1, "m4": 0}
    rng = np.random.default_rng(seed)
    items, judgements, item_id = [], [], 0
    for _ in range(30):
        for a, b in [("m1", "m2"), ("m1", "m3"), ("m1", "m4"), ("m2", "m3"), ("m2", "m4"), ("m3", "m4")]:
            item_id += 1
            items.append(_item(item_id, [a, b]))
            better, worse = (a, b) if strength[a] > strength[b] else (b, a)
            for reviewer in ("r1", "r2", "r3"):
                right = rng.random() < accuracy
                shown = [a, b] if rng.random() < 0.5 else [b, a]
                judgements.append(_judged(item_id, reviewer, shown, better if right else worse))
    return items, judgements


def test_simulated_reviewers_agree_more_as_accuracy_rises_and_the_strength_order_is_recovered() -> None:
    alphas = []
    for accuracy in (0.55, 0.75, 0.95):
        items, judgements = _simulate_pairwise(accuracy, seed=4)
        results = compute_results(
            _task(ReviewKind.pairwise, ["m1", "m2", "m3", "m4"], 3), items, judgements, 100, 0
        )
        choice = results.agreement[0]
        assert choice.target == "choice" and choice.reviewers == 3 and choice.cohen_kappa is None
        assert choice.fleiss_kappa is not None
        alphas.append(choice.krippendorff_alpha["nominal"])
        order = sorted(results.strengths, key=lambda model: -results.strengths[model].value)
        if accuracy >= 0.75:
            assert order == ["m1", "m2", "m3", "m4"]
            assert results.win_rates["m1"].ci_low > 0.5 > results.win_rates["m4"].ci_high
        assert all(rate.ci_low < rate.value < rate.ci_high for rate in results.win_rates.values())
    assert alphas[0] < alphas[1] < alphas[2]  # type: ignore[operator]


def test_rubric_means_per_model_and_criterion_with_score_agreement_and_disagreements() -> None:
    rubric = {"criteria": {"voice": "?", "accuracy": "?"}, "levels": {}}
    items = [_item(i, ["good"] if i < 5 else ["bad"]) for i in range(10)]
    judgements = []
    for i in range(10):
        base = 5 if i < 5 else 2
        judgements.append(
            _judged(i, "alice", ["good" if i < 5 else "bad"], scores={"voice": base, "accuracy": base})
        )
        bob = base - 3 if i == 0 else base  # bob disagrees by 3 on item 0's both criteria
        judgements.append(
            _judged(i, "bob", ["good" if i < 5 else "bad"], scores={"voice": bob, "accuracy": base})
        )
    results = compute_results(_task(ReviewKind.rubric, ["bad", "good"], 2, rubric), items, judgements, 200, 0)
    assert results.rubric_means["bad"]["accuracy"].value == 2.0
    assert results.rubric_means["good"]["voice"].value == pytest.approx(4.7)
    voice = next(row for row in results.agreement if row.target == "voice")
    assert (
        set(voice.krippendorff_alpha) == {"nominal", "ordinal", "interval"} and voice.cohen_kappa is not None
    )
    assert voice.krippendorff_alpha["interval"] < 1.0 and voice.fleiss_kappa is not None  # type: ignore[operator]
    accuracy = next(row for row in results.agreement if row.target == "accuracy")
    assert accuracy.krippendorff_alpha["interval"] == 1.0 and accuracy.cohen_kappa == 1.0
    assert [(d.item_id, d.target, d.values) for d in results.disagreements] == [
        (0, "voice", {"alice": 5, "bob": 2})
    ]


def test_model_vs_human_counts_the_model_preferred_or_indistinguishable() -> None:
    items = [_item(i, ["acme@1", HUMAN]) for i in range(4)]
    said = [("acme@1", HUMAN), (HUMAN, HUMAN), (TIE, BOTH_BAD), ("acme@1", "acme@1")]
    judgements = [_judged(i, who, ["acme@1", HUMAN], preferred)
                  for i, pair in enumerate(said) for who, preferred in zip(("r1", "r2"), pair, strict=True)]  # fmt: skip
    results = compute_results(
        _task(ReviewKind.model_vs_human, ["acme@1", HUMAN], 2), items, judgements, 200, 0
    )
    assert results.model_vs_human is not None and results.model_vs_human.value == pytest.approx(5 / 8)
    assert [d.item_id for d in results.disagreements] == [0, 2]
