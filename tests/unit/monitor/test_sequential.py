"""The always-valid statistics: a small A/A simulation peeked every 50 events keeps its false positives
under alpha, a real lift is found, and the helpers match known values. The full-size simulation is
`benchmarks/ab_simulation.py`."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.monitor.sequential import (
    _chi_square_survival,
    confidence_sequence,
    fixed_horizon_sample_size,
    msprt_log_ratio,
    sample_ratio_mismatch,
    samples_to_decide,
    wilson_interval,
)


def _simulate(rate_a: float, rate_b: float, experiments: int, looks: int, seed: int) -> np.ndarray:
    """The look (1-based) at which each experiment's mSPRT rejected, 0 if never; 50 events per look."""
    rng = np.random.default_rng(seed)
    counts = np.zeros((4, experiments))  # successes A, n A, successes B, n B
    stopped = np.zeros(experiments, dtype=int)
    for look in range(1, looks + 1):
        to_b = rng.binomial(50, 0.5, experiments)
        counts += [rng.binomial(50 - to_b, rate_a), 50 - to_b, rng.binomial(to_b, rate_b), to_b]
        rejected = msprt_log_ratio(*counts, tau=0.05) >= np.log(1 / 0.05)
        stopped[(stopped == 0) & rejected] = look
    return stopped


def test_peeking_every_50_events_keeps_false_positives_under_alpha() -> None:
    stopped = _simulate(0.6, 0.6, experiments=1000, looks=80, seed=0)
    assert (
        stopped > 0
    ).mean() <= 0.05  # a z-test read at every look rejects far more (benchmarks/RESULTS.md)


def test_a_real_lift_is_found_and_the_sequence_excludes_zero_exactly_then() -> None:
    stopped = _simulate(0.6, 0.7, experiments=300, looks=80, seed=1)
    assert (stopped > 0).mean() > 0.9
    low, high = confidence_sequence(600, 1000, 700, 1000, tau=0.05, alpha=0.05)
    rejects = msprt_log_ratio(600, 1000, 700, 1000, tau=0.05) >= np.log(20)
    assert bool(rejects) == bool(low > 0) and low < 0.1 < high


def test_helpers_match_known_values() -> None:
    assert fixed_horizon_sample_size(0.6, 0.05) == 1468  # the textbook two-proportion formula
    low, high = wilson_interval(60, 100)
    assert low == pytest.approx(0.502, abs=1e-3) and high == pytest.approx(0.691, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert _chi_square_survival(3.841, 1) == pytest.approx(0.05, abs=1e-4)
    assert _chi_square_survival(5.991, 2) == pytest.approx(0.05, abs=1e-4)
    assert sample_ratio_mismatch([500, 500], [50, 50]) == pytest.approx(1.0)
    assert sample_ratio_mismatch([900, 1100], [50, 50]) < 0.001
    assert sample_ratio_mismatch([10, 3], [100, 0]) == 0.0  # traffic to a variant weighted 0
    assert sample_ratio_mismatch([0, 0], [1, 1]) == 1.0
    assert samples_to_decide(0.6, 0.05, 0.05, 0.05) > samples_to_decide(0.6, 0.10, 0.05, 0.05) > 100


def test_the_intersected_confidence_sequence_covers_a_real_difference() -> None:
    rng = np.random.default_rng(2)
    counts = np.zeros((4, 400))
    low, high = np.full(400, -np.inf), np.full(400, np.inf)
    for _ in range(60):  # 3,000 events each, read every 50
        to_b = rng.binomial(50, 0.5, 400)
        counts += [rng.binomial(50 - to_b, 0.2), 50 - to_b, rng.binomial(to_b, 0.3), to_b]
        new_low, new_high = confidence_sequence(*counts, tau=0.05, alpha=0.05)
        low, high = np.maximum(low, new_low), np.minimum(high, new_high)
    assert np.mean((low > 0.1) | (high < 0.1)) <= 0.05  # 2.3% in a 3,000-experiment run of this
