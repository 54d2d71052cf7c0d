"""Always-valid A/B statistics on rates: the normal-mixture mSPRT and its confidence sequence. Pure
(numpy and the standard library; scipy is not a dependency), vectorised so the simulation in `benchmarks/ab_simulation.py` runs 10,000 experiments
at once.

Owns: the mixture likelihood ratio for a difference of two rates (Johari, Pekelis and Walsh, "Always
valid inference", 2017; what Optimizely ships), the confidence sequence it inverts to, Wilson intervals,
the fixed-horizon sample size a sequential test is compared with, the sample-ratio-mismatch check and
the per-arm sample a test is expected to decide by. Does not own: counting events (see
`tunesmith.monitor.ab`) or reading the registry.

Why always valid: the statistic is a nonnegative martingale under "no difference", so by Ville's
inequality the chance it *ever* reaches 1/alpha is at most alpha, however often one looks. A fixed-
horizon z-test peeked at every hour rejects a true null far more often than alpha.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]

__all__ = [
    "confidence_sequence",
    "fixed_horizon_sample_size",
    "msprt_log_ratio",
    "samples_to_decide",
    "sample_ratio_mismatch",
    "wilson_interval",
]


def _difference(
    successes_a: ArrayLike, n_a: ArrayLike, successes_b: ArrayLike, n_b: ArrayLike
) -> tuple[Array, Array]:
    """B's rate minus A's, and its variance under "no difference" (pooled rate, floored away from 0/1).

    The pooled variance is the one the null hypothesis implies; a plug-in per-arm variance would be 0
    after a run of identical outcomes and make the statistic jump (an A/A test would then reject).
    """
    sa, na, sb, nb = (np.asarray(x, dtype=np.float64) for x in (successes_a, n_a, successes_b, n_b))
    difference = sb / np.maximum(nb, 1) - sa / np.maximum(na, 1)
    pooled = np.clip((sa + sb + 0.5) / (na + nb + 1.0), 1e-3, 1 - 1e-3)  # +0.5/+1: never exactly 0 or 1
    variance = pooled * (1 - pooled) * (1 / np.maximum(na, 1) + 1 / np.maximum(nb, 1))
    return difference, variance


def msprt_log_ratio(
    successes_a: ArrayLike, n_a: ArrayLike, successes_b: ArrayLike, n_b: ArrayLike, tau: float
) -> Array:
    """log of the mixture likelihood ratio for "B's rate differs from A's", mixing N(0, tau²) over the
    difference. Reject "no difference" once it reaches log(1/alpha); the always-valid p-value is
    min(1, 1 / max ratio so far)."""
    difference, variance = _difference(successes_a, n_a, successes_b, n_b)
    total = variance + tau**2
    result: Array = 0.5 * np.log(variance / total) + difference**2 * tau**2 / (2 * variance * total)
    return result


def confidence_sequence(
    successes_a: ArrayLike,
    n_a: ArrayLike,
    successes_b: ArrayLike,
    n_b: ArrayLike,
    tau: float,
    alpha: float,
) -> tuple[Array, Array]:
    """(low, high) for B's rate minus A's, covering the truth at every look at once with probability
    1 - alpha: the differences the mSPRT would not reject. Excludes 0 exactly when the test rejects."""
    difference, variance = _difference(successes_a, n_a, successes_b, n_b)
    total = variance + tau**2
    half = np.sqrt(variance * total / tau**2 * (2 * np.log(1 / alpha) + np.log(total / variance)))
    return difference - half, difference + half


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for one rate ((0, 1) with no data)."""
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    rate = successes / n
    centre = (rate + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(rate * (1 - rate) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


def fixed_horizon_sample_size(base: float, lift: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm sample of a two-sided two-proportion z-test at `alpha` with `power` to detect `lift`."""
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    treated = base + lift
    return int(np.ceil(z**2 * (base * (1 - base) + treated * (1 - treated)) / lift**2))


def samples_to_decide(rate: float, difference: float, tau: float, alpha: float, share_b: float = 0.5) -> int:
    """Total sample (both arms) at which the mSPRT's boundary meets an expected difference of
    `difference` on a base rate `rate`, arm B getting `share_b` of traffic: a planning figure, the
    sample at which the test decides about half the time if the difference is real."""
    if difference == 0:
        raise ValueError("samples_to_decide: the difference must be non-zero")
    pooled = min(max(rate + share_b * difference, 1e-3), 1 - 1e-3)
    unit = pooled * (1 - pooled) * (1 / share_b + 1 / (1 - share_b))  # variance times the total sample
    total = 2
    while total < 10**9:
        variance = unit / total
        log_ratio = 0.5 * np.log(variance / (variance + tau**2)) + difference**2 * tau**2 / (
            2 * variance * (variance + tau**2)
        )
        if log_ratio >= np.log(1 / alpha):
            return total
        total = int(total * 1.05) + 1
    return total


def sample_ratio_mismatch(counts: list[int], weights: list[float]) -> float:
    """p-value of a chi-square test that `counts` were drawn with the configured `weights`: a tiny one
    (< 0.001 is the usual alarm) means assignment or logging is broken and no comparison can be trusted."""
    total = sum(counts)
    if total == 0 or len(counts) < 2:
        return 1.0
    expected = [weight / sum(weights) * total for weight in weights]
    if any(count > 0 and share == 0 for count, share in zip(counts, expected, strict=True)):
        return 0.0  # traffic reached a variant configured to get none
    statistic = sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True) if e > 0)
    return _chi_square_survival(statistic, sum(1 for e in expected if e > 0) - 1)


def _chi_square_survival(statistic: float, degrees: int) -> float:
    """P(chi-square with `degrees` >= statistic): the regularised upper incomplete gamma Q(k/2, x/2),
    by its series below k/2 + 1 and its continued fraction above (Numerical Recipes 6.2)."""
    if degrees < 1:
        return 1.0
    a, x = degrees / 2, statistic / 2
    if x <= 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1 / a
        for n in range(1, 500):
            term *= x / (a + n)
            total += term
            if term < total * 1e-15:
                break
        return max(0.0, 1 - total * math.exp(log_front))
    b = x + 1 - a
    c, d = 1 / 1e-300, 1 / b
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1e-300 if abs(d) < 1e-300 else d
        c = b + an / c
        c = 1e-300 if abs(c) < 1e-300 else c
        d = 1 / d
        h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return math.exp(log_front) * h
