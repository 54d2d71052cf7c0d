"""Bootstrap intervals and the paired test against values known in closed form."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.eval.metrics import mean_of_first
from tunesmith.eval.stats import Verdict, bootstrap_interval, paired_test, resample_indices


def test_bootstrap_interval_of_a_proportion_matches_the_normal_approximation() -> None:
    stats = np.array([[1.0], [0.0]] * 50)  # p = 0.5, n = 100: standard error 0.05, 95% ≈ ±0.098
    interval = bootstrap_interval(stats, mean_of_first, resample_indices(100, 2000))
    assert interval.value == 0.5
    assert interval.ci_low == pytest.approx(0.402, abs=0.02) and interval.ci_high == pytest.approx(
        0.598, abs=0.02
    )


def test_paired_test_p_value_matches_the_exact_sign_flip_distribution() -> None:
    # 5 examples, one model always right, the other always wrong: under the null each example's pair
    # is swapped with probability 1/2; |difference| = 1 only when none or all are swapped: p = 2/32.
    better, worse = np.ones((5, 1)), np.zeros((5, 1))
    result = paired_test(better, worse, mean_of_first, resample_indices(5, 4000))
    assert result.difference == 1.0 and result.p_value == pytest.approx(2 / 32, abs=0.01)
    assert result.verdict == Verdict.no_significant_difference  # 5 examples are not enough


def test_paired_test_verdicts() -> None:
    rng = np.random.default_rng(3)
    strong, weak = (rng.random((60, 1)) < 0.9).astype(float), (rng.random((60, 1)) < 0.3).astype(float)
    indices = resample_indices(60)
    up = paired_test(strong, weak, mean_of_first, indices)
    assert up.verdict == Verdict.better and up.p_value < 0.01 and 0 < up.ci_low < up.difference < up.ci_high
    assert paired_test(weak, strong, mean_of_first, indices).verdict == Verdict.worse
    same = paired_test(strong, strong.copy(), mean_of_first, indices)
    assert same.p_value == 1.0 and same.verdict == Verdict.no_significant_difference
    with pytest.raises(ValueError, match="cannot pair"):
        paired_test(strong, weak[:10], mean_of_first, indices)
