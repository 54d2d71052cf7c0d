"""The gate and canary verdicts, on hand-made reports."""

from __future__ import annotations

from typing import Any

import numpy as np

from tunesmith.loop.decide import bias_check, canary_verdict, judge_check, metric_checks
from tunesmith.monitor.ab import ab_report


def _report(*rows: tuple[str, float, float, float]) -> dict[str, Any]:
    """An evaluation report with candidate-vs-champion comparisons (metric, difference, low, high)."""
    comparisons = [
        {"model": "candidate", "reference": "champion", "metric": metric, "difference": difference,
         "ci_low": low, "ci_high": high, "p_value": 0.01, "verdict": "better"}
        for metric, difference, low, high in rows
    ]  # fmt: skip
    return {
        "created_at": "2026-12-07T00:00:00", "task": "generation",
        "data": {"path": "test.jsonl", "hash": "0" * 64, "examples": 20},
        "settings": {"max_new_tokens": 8, "batch_size": 16, "decoding": "greedy", "bootstrap_samples": 200},
        "models": [], "comparisons": comparisons,
    }  # fmt: skip


def test_the_gate_metric_interval_must_clear_zero_and_the_others_may_fall_by_their_tolerance() -> None:
    passing = metric_checks(
        _report(("rouge_l", 0.3, 0.1, 0.5), ("bleu", -0.5, -2, 1)), "rouge_l", 0.0, 0.01, {"bleu": 1.0}
    )
    assert [(check.name, check.passed) for check in passing] == [("rouge_l", True), ("bleu", True)]
    straddles = metric_checks(_report(("rouge_l", 0.2, -0.05, 0.45)), "rouge_l", 0.0, 0.01, {})
    assert not straddles[0].passed and "needs the interval above 0" in straddles[0].line
    regresses = metric_checks(
        _report(("rouge_l", 0.3, 0.1, 0.5), ("rouge_1", -0.05, -0.1, 0.0)), "rouge_l", 0.0, 0.01, {}
    )
    assert [check.passed for check in regresses] == [True, False] and "may fall by 0.01" in regresses[1].line
    above_delta = metric_checks(_report(("rouge_l", 0.3, 0.1, 0.5)), "rouge_l", 0.2, 0.01, {})
    assert not above_delta[0].passed


def test_the_judge_blocks_only_a_significant_preference_for_the_champion() -> None:
    assert judge_check([0.5, 1.0, 0.0, 0.5, 1.0, None], 0.5, 200).passed
    losing = judge_check([0.0] * 12, 0.5, 200)
    assert not losing.passed and "12 production prompts" in losing.line
    assert not judge_check([None, None], 0.5, 200).passed


def _traffic(candidate_up: float, champion_up: float, users: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    traffic = []
    for index in range(users):
        variant, rate = ("voice@2", candidate_up) if index % 10 == 0 else ("voice@1", champion_up)
        thumbs = "up" if rng.random() < rate else "down"
        traffic.append({"id": f"r{index}", "variant": variant, "user": f"u{index}", "outcomes": [],
                        "feedback": [{"thumbs": thumbs, "rating": None, "preferred_over": None, "ranking": None}]})  # fmt: skip
    return traffic


VARIANTS: Any = [{"model": "voice@1", "weight": 90.0}, {"model": "voice@2", "weight": 10.0}]


def test_the_canary_promotes_a_better_candidate_rolls_back_a_worse_one_and_otherwise_waits() -> None:
    better = ab_report(_traffic(0.95, 0.3, 400), VARIANTS, "voice@1")
    assert canary_verdict(better, "voice@2", "thumbs", 2000, "roll_back").action == "promote"
    worse = ab_report(_traffic(0.1, 0.9, 200), VARIANTS, "voice@1")
    verdict = canary_verdict(worse, "voice@2", "thumbs", 2000, "promote")
    assert verdict.action == "roll_back" and verdict.reason.startswith("worse than the champion")
    even = ab_report(_traffic(0.5, 0.5, 100), VARIANTS, "voice@1")
    waiting = canary_verdict(even, "voice@2", "thumbs", 2000, "promote")
    assert waiting.action is None and waiting.reason.startswith("keep collecting")
    assert (
        canary_verdict(even, "voice@2", "thumbs", 10, "roll_back").action == "roll_back"
    )  # undecided at max
    assert canary_verdict(even, "voice@2", "conversion", 2000, "promote").action is None  # not observed yet


def test_a_broken_split_rolls_the_canary_back() -> None:
    lopsided = [request | {"variant": "voice@2"} for request in _traffic(0.5, 0.5, 100)[:60]] + _traffic(
        0.5, 0.5, 100
    )[60:]
    verdict = canary_verdict(ab_report(lopsided, VARIANTS, "voice@1"), "voice@2", "thumbs", 2000, "promote")
    assert verdict.action == "roll_back" and "split" in verdict.reason


def test_the_bias_check_is_the_audits_gate_and_a_failure_names_attribute_and_bound() -> None:
    failure = "pronouns: refusal_flip 0.200 [0.050, 0.350] over 20 pairs; upper bound 0.400 above 0.1"
    gate = {"threshold": 0.1, "measures": ["refusal_flip"]}
    passed = bias_check({"pairs": 40, "gate": {**gate, "passed": True, "failures": []}})
    assert (
        passed.passed
        and passed.line == "bias: refusal_flip within 0.1 (upper 95% bounds) over 40 counterfactual pairs"
    )
    failed = bias_check({"pairs": 40, "gate": {**gate, "passed": False, "failures": [failure]}})
    assert not failed.passed and failed.line == f"bias: {failure}"
