"""Intervals for counterfactual measures, resampling test examples (not pairs), and the fine-tune vs base test.

Owns: turning per-pair values (a flip is 1 or 0; a difference is a number) into per-example rows
[sum, pairs], so that an example rewritten five ways (one name to five origins) counts as one unit
when resampling (its rewrites are not independent); the mean over pairs with its percentile bootstrap
interval; the paired difference between two models on the same pairs with its interval and
approximate-randomization p-value; and the gate, which also takes the Wilson bound over pairs, so
that zero flips in a handful of pairs is not read as proof of no bias. The bootstrap and the test themselves are
`tunesmith.eval.stats`'s. Does not own: what a pair's value is (see `measures`). No torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunesmith.eval.stats import ALPHA, bootstrap_interval, paired_test, resample_indices


def per_example(example_ids: Sequence[int], values: Sequence[float]) -> np.ndarray:
    """(E, 2) rows of [sum of values, pairs], one per distinct example id in first-seen order."""
    order = list(dict.fromkeys(example_ids))
    rows = {example: index for index, example in enumerate(order)}
    stats = np.zeros((len(order), 2))
    for example, value in zip(example_ids, values, strict=True):
        stats[rows[example]] += (value, 1.0)
    return stats


def mean_over_pairs(stats: np.ndarray) -> float:
    """The mean value per pair of the examples in `stats` (0 with no pairs)."""
    pairs = stats[:, 1].sum()
    return float(stats[:, 0].sum() / pairs) if pairs else 0.0


def measure_interval(stats: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
    """The mean over pairs with its 95% bootstrap interval, and how many pairs and examples it rests on."""
    interval = bootstrap_interval(stats, mean_over_pairs, resample_indices(len(stats), samples, seed))
    return {**interval.to_dict(), "pairs": int(stats[:, 1].sum()), "examples": len(stats)}


def paired_difference(stats: np.ndarray, reference: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
    """`stats`' model minus `reference`'s on the same pairs: difference, 95% interval, p-value, change.

    `change` is "higher" or "lower" where the approximate-randomization test finds the difference
    significant at the 5% level, else "no significant difference".
    """
    if not np.array_equal(stats[:, 1], reference[:, 1]):
        raise ValueError("paired measures must come from the same pairs")
    result = paired_test(stats, reference, mean_over_pairs, resample_indices(len(stats), samples, seed), seed)
    change = "no significant difference"
    if result.p_value < ALPHA and result.difference != 0:
        change = "higher" if result.difference > 0 else "lower"
    return {
        "difference": result.difference,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "p_value": result.p_value,
        "change": change,
    }


def wilson_upper(successes: float, trials: int) -> float:
    """The upper end of the 95% Wilson score interval of a proportion (1 with no trials)."""
    if trials == 0:
        return 1.0
    z = 1.959963984540054
    share = successes / trials
    center = share + z * z / (2 * trials)
    margin = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return min(1.0, (center + margin) / (1 + z * z / trials))


def gate_bound(result: dict[str, Any]) -> float:
    """The upper bound the gate checks: the bootstrap's, or the Wilson bound over the pairs if higher.

    With no flip at all every bootstrap resample has none either, and the interval is [0, 0] however
    few pairs there were; the Wilson bound says what so few pairs cannot rule out (0 of 20 pairs: up to
    0.16), so a gate never passes a model for lack of evidence.
    """
    return max(float(result["ci_high"]), wilson_upper(result["value"] * result["pairs"], result["pairs"]))


def gate_failures(
    attributes: dict[str, dict[str, Any]], model: str, measures: Sequence[str], threshold: float
) -> list[str]:
    """One line per attribute and gated measure whose upper 95% bound for `model` exceeds `threshold`."""
    failures = []
    for name, attribute in attributes.items():
        for measure in measures:
            result = attribute["measures"].get(measure, {}).get(model)
            if result is not None and gate_bound(result) > threshold:
                failures.append(
                    f"{name}: {measure} {result['value']:.3f} [{result['ci_low']:.3f}, {result['ci_high']:.3f}] "
                    f"over {result['pairs']} pairs; upper bound {gate_bound(result):.3f} above {threshold:g}"
                )
    return failures
