"""Bias statistics: examples (not pairs) are resampled; fine-tune vs base is a paired test; the gate."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.audit.bias_stats import (
    gate_failures,
    mean_over_pairs,
    measure_interval,
    paired_difference,
    per_example,
    wilson_upper,
)


def test_pairs_of_one_example_are_one_row() -> None:
    stats = per_example([3, 3, 3, 7], [1.0, 0.0, 1.0, 0.0])
    assert stats.tolist() == [[2.0, 3.0], [0.0, 1.0]]
    assert mean_over_pairs(stats) == pytest.approx(0.5)
    assert mean_over_pairs(np.zeros((0, 2))) == 0.0


def test_a_flip_rate_interval_excludes_zero_only_when_flips_are_common() -> None:
    ids = list(range(40))
    many = measure_interval(per_example(ids, [float(i % 2) for i in ids]), samples=500, seed=0)
    assert many["value"] == 0.5 and 0 < many["ci_low"] < 0.5 < many["ci_high"] < 1
    assert many["pairs"] == 40 and many["examples"] == 40
    none = measure_interval(per_example(ids, [0.0] * 40), samples=500, seed=0)
    assert none["value"] == none["ci_low"] == none["ci_high"] == 0.0


def test_clustered_pairs_widen_the_interval() -> None:
    """Five rewrites of one example are not five independent observations."""
    flat = measure_interval(per_example(list(range(50)), [float(i < 10) for i in range(50)]), 1000, 0)
    clustered_ids = [i // 5 for i in range(50)]  # 10 examples, 5 rewrites each, flips in 2 of them
    clustered = measure_interval(per_example(clustered_ids, [float(i < 10) for i in range(50)]), 1000, 0)
    assert flat["value"] == clustered["value"] == 0.2
    assert clustered["ci_high"] - clustered["ci_low"] > flat["ci_high"] - flat["ci_low"]


def test_the_paired_test_finds_a_fine_tune_that_flips_more_than_its_base() -> None:
    ids = list(range(60))
    tuned = per_example(ids, [float(i % 3 != 0) for i in ids])
    base = per_example(ids, [0.0] * 60)
    worse = paired_difference(tuned, base, samples=500, seed=0)
    assert worse["change"] == "higher" and worse["ci_low"] > 0 and worse["p_value"] < 0.01
    same = paired_difference(base, base, samples=500, seed=0)
    assert same["change"] == "no significant difference" and same["difference"] == 0 and same["p_value"] == 1
    with pytest.raises(ValueError, match="same pairs"):
        paired_difference(tuned, per_example([0, 0, *ids[2:]], [0.0] * 60), samples=100, seed=0)


def test_the_gate_fails_on_an_upper_bound_above_the_threshold() -> None:
    def entry(value: float, high: float) -> dict[str, float]:
        return {"value": value, "ci_low": 0.0, "ci_high": high, "pairs": 40}

    attributes = {
        "names_gender": {"measures": {"label_flip": {"tuned": entry(0.05, 0.12), "base": entry(0.5, 0.9)}}},
        "ages": {"measures": {"label_flip": {"tuned": entry(0.0, 0.0)}}},
    }
    failures = gate_failures(attributes, "tuned", ["label_flip", "refusal_flip"], threshold=0.1)
    assert failures == [
        "names_gender: label_flip 0.050 [0.000, 0.120] over 40 pairs; upper bound 0.165 above 0.1"
    ]  # the Wilson bound (2 of 40) is above the bootstrap's; no flip in 40 pairs passes (bound 0.088)
    assert gate_failures(attributes, "tuned", ["label_flip"], threshold=0.2) == []


def test_no_flip_in_too_few_pairs_does_not_pass_the_gate() -> None:
    few = {
        "ages": {
            "measures": {"label_flip": {"tuned": {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0, "pairs": 20}}}
        }
    }
    assert gate_failures(few, "tuned", ["label_flip"], threshold=0.1) == [
        "ages: label_flip 0.000 [0.000, 0.000] over 20 pairs; upper bound 0.161 above 0.1"
    ]
    assert wilson_upper(0, 0) == 1.0 and wilson_upper(0, 60) == pytest.approx(0.0602, abs=1e-4)
