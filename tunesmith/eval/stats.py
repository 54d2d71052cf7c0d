"""Confidence intervals and paired significance for any metric given as per-example statistics.

Owns: percentile bootstrap intervals (examples resampled with replacement, the metric recomputed on
each resample, so corpus metrics such as BLEU get honest intervals too), the paired bootstrap
interval of a difference between two models scored on the same examples, the paired
approximate-randomization test (each example's two outputs swapped at random; the null distribution
of the difference, as in sacrebleu's `--paired-ar` and Riezler & Maxwell 2005), and the verdict.
Does not own: the metrics (see `metrics`), which only need to provide `statistics` rows and an
`aggregate`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

Aggregate = Callable[[np.ndarray], float]

DEFAULT_SAMPLES = 1000
CONFIDENCE = 0.95
ALPHA = 0.05


class Verdict(StrEnum):
    """How a model compares with another on one metric."""

    better = "better"  # significantly higher (p < 0.05)
    worse = "worse"  # significantly lower (p < 0.05)
    no_significant_difference = "no significant difference"


@dataclass(frozen=True)
class Interval:
    value: float  # the metric on the full set
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high}


@dataclass(frozen=True)
class PairedResult:
    difference: float  # metric(model) - metric(reference) on the full set
    ci_low: float
    ci_high: float
    p_value: float  # two-sided, approximate randomization
    verdict: Verdict


def resample_indices(num_examples: int, samples: int = DEFAULT_SAMPLES, seed: int = 0) -> np.ndarray:
    """(samples, num_examples) bootstrap indices; share one draw across models to pair them."""
    return np.random.default_rng(seed).integers(0, num_examples, size=(samples, num_examples))


def bootstrap_interval(stats: np.ndarray, aggregate: Aggregate, indices: np.ndarray) -> Interval:
    """The metric with its percentile bootstrap interval (95%)."""
    values = np.array([aggregate(stats[row]) for row in indices])
    low, high = np.quantile(values, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Interval(aggregate(stats), float(low), float(high))


def paired_test(
    stats: np.ndarray,
    reference_stats: np.ndarray,
    aggregate: Aggregate,
    indices: np.ndarray,
    seed: int = 0,
) -> PairedResult:
    """Compare a model with a reference model on the same examples (rows aligned).

    The interval is the paired bootstrap interval of the difference; the p-value is the two-sided
    approximate-randomization test with as many trials as bootstrap samples, (count + 1) / (trials + 1).
    """
    if stats.shape != reference_stats.shape:
        raise ValueError(f"cannot pair statistics of shapes {stats.shape} and {reference_stats.shape}")
    observed = aggregate(stats) - aggregate(reference_stats)
    differences = np.array([aggregate(stats[row]) - aggregate(reference_stats[row]) for row in indices])
    low, high = np.quantile(differences, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    rng = np.random.default_rng(seed + 1)
    trials = len(indices)
    at_least_as_extreme = 0
    for _ in range(trials):
        swap = rng.random(len(stats)) < 0.5
        mixed = np.where(swap[:, None], reference_stats, stats)
        mixed_reference = np.where(swap[:, None], stats, reference_stats)
        if abs(aggregate(mixed) - aggregate(mixed_reference)) >= abs(observed) - 1e-12:
            at_least_as_extreme += 1
    p_value = (at_least_as_extreme + 1) / (trials + 1)
    return PairedResult(float(observed), float(low), float(high), p_value, verdict(observed, p_value))


def verdict(difference: float, p_value: float) -> Verdict:
    """Better or worse when significant at the 5% level, else no significant difference."""
    if p_value >= ALPHA or difference == 0:
        return Verdict.no_significant_difference
    return Verdict.better if difference > 0 else Verdict.worse
