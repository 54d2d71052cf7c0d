"""The statistics of human review: win rates, Bradley-Terry strengths, rubric means (each with a
bootstrap interval over items), and agreement between reviewers. Pure numpy; no torch.

Owns: those computations on plain arrays and lists. Does not own: reading judgements (see `store`)
or which values count as the same answer (the store resolves A/B to model identities first, so two
reviewers who saw the outputs in different orders agree when they chose the same model).

Conventions, with their reasons:
- Intervals are 95% percentile bootstrap intervals over *items* (an item's judgements are resampled
  together: several reviewers of one item are not independent evidence).
- A tie and "both bad" count half a win to each side, as Chatbot Arena counts "tie (both bad)":
  neither output was preferred.
- Bradley-Terry is fitted by Hunter's (2004) MM iteration, `p_i <- W_i / sum_j n_ij / (p_i + p_j)`,
  written out here because numpy is the only numeric dependency (scipy and choix are not installed,
  and the fit is ten lines whose every step raises the likelihood). Each pair of models also gets one
  virtual tie, a weak prior that keeps the strengths finite when a model wins (or loses) every
  comparison in a small sample or a bootstrap resample. Strengths are log-strengths centred on 0: the
  probability that `i` beats `j` is `1 / (1 + exp(s_j - s_i))`.
- Agreement follows the textbook definitions: Cohen's kappa (Cohen 1960) for two reviewers on the
  items both judged; Fleiss' kappa (Fleiss 1971) for a fixed number of reviewers per item; and
  Krippendorff's alpha (Krippendorff 2011) from the coincidence matrix, with the nominal, ordinal and
  interval distance metrics, for any number of reviewers with missing judgements. Undefined values
  (a single category used throughout: no variation to agree on) are NaN.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from typing import Literal

import numpy as np

from tunesmith.eval.stats import CONFIDENCE, DEFAULT_SAMPLES, Interval

Level = Literal["nominal", "ordinal", "interval"]
Comparison = tuple[str, str, float]  # (model a, model b, a's score: 1 win, 0.5 tie, 0 loss)

_MM_TOLERANCE = 1e-7  # on the log-strengths: far below the intervals
_MM_MAX_ITERATIONS = 10_000
_BLOCK = 250  # bootstrap resamples computed together (a (250, judgements) weight matrix at a time)


# ---------------------------------------------------------------- bootstrap over items


def cluster_bootstrap(
    groups: Sequence[Hashable],
    statistic: Callable[[np.ndarray], np.ndarray],
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> list[Interval]:
    """`statistic` with percentile intervals from resampling the groups.

    Args:
        groups: the group (item) of each row; a resample draws groups with replacement, all rows each.
        statistic: (resamples, rows) row weights -> (resamples, values), e.g. one value per model. A row's
            weight is how many times its group was drawn (all ones for the statistic itself); resamples
            go in blocks so that every statistic is a few array operations, not a Python loop.
    """
    keys = list(dict.fromkeys(groups))
    position = {key: index for index, key in enumerate(keys)}
    group_of = np.array([position[group] for group in groups], dtype=int)
    value = statistic(np.ones((1, len(groups))))[0]
    rng = np.random.default_rng(seed)
    draws = []
    for block in range(0, samples, _BLOCK):
        drawn = rng.integers(0, len(keys), (min(_BLOCK, samples - block), len(keys)))
        counts = np.stack([np.bincount(row, minlength=len(keys)) for row in drawn])
        draws.append(statistic(counts[:, group_of].astype(float)))
    low, high = np.nanquantile(np.concatenate(draws), [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2], axis=0)
    return [Interval(float(v), float(lo), float(hi)) for v, lo, hi in zip(value, low, high, strict=True)]


# ---------------------------------------------------------------- preferences


def _encode(comparisons: Sequence[Comparison]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The models, and per comparison one-hot rows: (rows, pairs) games and (rows, models) points won."""
    models = sorted({model for a, b, _ in comparisons for model in (a, b)})
    index = {model: i for i, model in enumerate(models)}
    games = np.zeros((len(comparisons), len(models) ** 2))
    points = np.zeros((len(comparisons), len(models)))
    for row, (a, b, score) in enumerate(comparisons):
        games[row, index[a] * len(models) + index[b]] = 1.0
        points[row, index[a]] += score
        points[row, index[b]] += 1.0 - score
    return models, games, points


def win_rates(
    comparisons: Sequence[Comparison],
    items: Sequence[Hashable],
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Each model's share of its comparisons won (ties half), with intervals over `items`."""
    models, games, points = _encode(comparisons)
    size = len(models)
    played = games.reshape(-1, size, size).sum(axis=2) + games.reshape(-1, size, size).sum(axis=1)

    def rates(weights: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray((weights @ points) / (weights @ played), dtype=float)

    return dict(zip(models, cluster_bootstrap(items, rates, samples, seed), strict=True))


def bradley_terry(games: np.ndarray, wins: np.ndarray, prior: float = 1.0) -> np.ndarray:
    """Log-strengths (each row's mean 0) by MM, for a batch of (batch, models, models) game counts
    (`games[b, i, j]`: comparisons of i and j, symmetric) and (batch, models) points won (ties half).

    `prior` virtual ties are added between every pair of models (see the module docstring).
    """
    size = wins.shape[1]
    games = games + prior * (1 - np.eye(size))
    wins = wins + prior * (size - 1) / 2  # the virtual ties' halves
    strength = np.ones_like(wins)
    for _ in range(_MM_MAX_ITERATIONS):
        updated = wins / (games / (strength[:, :, None] + strength[:, None, :])).sum(axis=2)
        updated /= np.exp(np.log(updated).mean(axis=1, keepdims=True))
        converged = np.max(np.abs(np.log(updated / strength))) < _MM_TOLERANCE
        strength = updated
        if converged:
            break
    log_strength = np.log(strength)
    return np.asarray(log_strength - log_strength.mean(axis=1, keepdims=True), dtype=float)


def bradley_terry_strengths(
    comparisons: Sequence[Comparison],
    items: Sequence[Hashable],
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Each model's Bradley-Terry log-strength, refitted on each bootstrap resample of `items`."""
    models, games, points = _encode(comparisons)
    size = len(models)

    def fit(weights: np.ndarray) -> np.ndarray:  # every resample of a block fitted at once
        counted = (weights @ games).reshape(-1, size, size)
        return bradley_terry(counted + counted.transpose(0, 2, 1), weights @ points)

    return dict(zip(models, cluster_bootstrap(items, fit, samples, seed), strict=True))


def mean_interval(
    values: Sequence[float], items: Sequence[Hashable], samples: int = DEFAULT_SAMPLES, seed: int = 0
) -> Interval:
    """The mean of `values` (rubric scores, 0/1 outcomes) with its interval over `items`."""
    array = np.asarray(values, dtype=float)

    def mean(weights: np.ndarray) -> np.ndarray:
        return np.asarray((weights @ array) / weights.sum(axis=1), dtype=float)[:, None]

    return cluster_bootstrap(items, mean, samples, seed)[0]


# ---------------------------------------------------------------- agreement


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's kappa between two reviewers' labels of the same items (in the same order)."""
    if len(first) != len(second) or not first:
        raise ValueError("Cohen's kappa needs the two reviewers' labels of the same, non-empty items")
    categories = sorted(set(first) | set(second), key=str)
    observed = float(np.mean([a == b for a, b in zip(first, second, strict=True)]))
    count_a, count_b = Counter(first), Counter(second)
    expected = sum(count_a[c] * count_b[c] for c in categories) / len(first) ** 2
    return float("nan") if expected == 1 else (observed - expected) / (1 - expected)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an (items, categories) table of how many reviewers chose each category.

    Every row must sum to the same number of reviewers, two or more.
    """
    counts = np.asarray(counts, dtype=float)
    raters = counts.sum(axis=1)
    if counts.ndim != 2 or len(counts) == 0 or np.any(raters != raters[0]) or raters[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of reviewers on every item")
    n = raters[0]
    per_item = ((counts**2).sum(axis=1) - n) / (n * (n - 1))
    shares = counts.sum(axis=0) / counts.sum()
    expected = float((shares**2).sum())
    return float("nan") if expected == 1 else (float(per_item.mean()) - expected) / (1 - expected)


def krippendorff_alpha(data: np.ndarray, level: Level = "nominal") -> float:
    """Krippendorff's alpha from a (reviewers, items) matrix of numeric values, NaN where missing.

    Items with fewer than two values are not pairable and are left out, as the definition says.
    """
    data = np.asarray(data, dtype=float)
    values = np.unique(data[~np.isnan(data)])
    coincidences = np.zeros((len(values), len(values)))
    for column in data.T:
        present = column[~np.isnan(column)]
        if len(present) < 2:
            continue
        counts = np.array([(present == value).sum() for value in values], dtype=float)
        coincidences += (np.outer(counts, counts) - np.diag(counts)) / (len(present) - 1)
    totals = coincidences.sum(axis=1)
    total = totals.sum()
    if total == 0:
        raise ValueError("Krippendorff's alpha needs an item with two or more values")
    distance = _distances(values, totals, level)
    observed = (coincidences * distance).sum()
    expected = (np.outer(totals, totals) * distance).sum() / (total - 1)
    return float("nan") if expected == 0 else float(1 - observed / expected)


def _distances(values: np.ndarray, totals: np.ndarray, level: Level) -> np.ndarray:
    """The squared difference function delta^2(c, k) of Krippendorff's metric `level`."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    if level == "interval":
        return np.asarray(np.subtract.outer(values, values) ** 2, dtype=float)
    # ordinal: (the totals of the values from c to k, less half of c's and k's own) squared
    cumulative = np.concatenate([[0.0], np.cumsum(totals)])
    low = np.minimum.outer(np.arange(len(values)), np.arange(len(values)))
    high = np.maximum.outer(np.arange(len(values)), np.arange(len(values)))
    between = cumulative[high + 1] - cumulative[low] - (totals[:, None] + totals[None, :]) / 2
    return np.asarray(between**2, dtype=float)
