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

_MM_TOLERANCE = 1e-10
_MM_MAX_ITERATIONS = 10_000


# ---------------------------------------------------------------- bootstrap over items


def cluster_bootstrap(
    groups: Sequence[Hashable],
    statistic: Callable[[np.ndarray], np.ndarray],
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> list[Interval]:
    """`statistic(rows)` (a vector) on every row, with percentile intervals from resampling the groups.

    Args:
        groups: the group (item) of each row; a resample draws groups with replacement, all rows each.
        statistic: row indices -> a vector of values (one per model, say).
    """
    keys = list(dict.fromkeys(groups))
    position = {key: index for index, key in enumerate(keys)}
    members: list[list[int]] = [[] for _ in keys]
    for row, group in enumerate(groups):
        members[position[group]].append(row)
    member_arrays = [np.array(rows, dtype=int) for rows in members]
    value = statistic(np.arange(len(groups)))
    rng = np.random.default_rng(seed)
    draws = np.array(
        [
            statistic(np.concatenate([member_arrays[k] for k in rng.integers(0, len(keys), len(keys))]))
            for _ in range(samples)
        ]
    ).reshape(samples, -1)
    low, high = np.nanquantile(draws, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2], axis=0)
    return [Interval(float(v), float(lo), float(hi)) for v, lo, hi in zip(value, low, high, strict=True)]


# ---------------------------------------------------------------- preferences


def _models(comparisons: Sequence[Comparison]) -> list[str]:
    return sorted({model for a, b, _ in comparisons for model in (a, b)})


def win_rates(
    comparisons: Sequence[Comparison],
    items: Sequence[Hashable],
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Each model's share of its comparisons won (ties half), with intervals over `items`."""
    models = _models(comparisons)
    index = {model: i for i, model in enumerate(models)}
    first = np.array([index[a] for a, _, _ in comparisons])
    second = np.array([index[b] for _, b, _ in comparisons])
    score = np.array([s for _, _, s in comparisons], dtype=float)

    def rates(rows: np.ndarray) -> np.ndarray:
        won = np.bincount(first[rows], score[rows], len(models))
        won += np.bincount(second[rows], 1 - score[rows], len(models))
        played = np.bincount(first[rows], minlength=len(models)) + np.bincount(
            second[rows], minlength=len(models)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(won / played, dtype=float)

    return dict(zip(models, cluster_bootstrap(items, rates, samples, seed), strict=True))


def bradley_terry(
    first: np.ndarray, second: np.ndarray, score: np.ndarray, num_models: int, prior: float = 1.0
) -> np.ndarray:
    """Log-strengths (mean 0) by MM, from comparisons `first[r]` vs `second[r]` with `first`'s `score[r]`.

    `prior` virtual ties are added between every pair of models (see the module docstring).
    """
    games = np.full((num_models, num_models), prior, dtype=float)
    np.fill_diagonal(games, 0.0)
    np.add.at(games, (first, second), 1.0)
    np.add.at(games, (second, first), 1.0)
    wins = np.full(num_models, prior * (num_models - 1) / 2)  # the virtual ties' halves
    wins += np.bincount(first, score, num_models) + np.bincount(second, 1 - score, num_models)
    strength = np.ones(num_models)
    for _ in range(_MM_MAX_ITERATIONS):
        updated = wins / (games / (strength[:, None] + strength[None, :])).sum(axis=1)
        updated /= np.exp(np.log(updated).mean())
        if np.max(np.abs(updated - strength)) < _MM_TOLERANCE:
            strength = updated
            break
        strength = updated
    log_strength = np.log(strength)
    return np.asarray(log_strength - log_strength.mean(), dtype=float)


def bradley_terry_strengths(
    comparisons: Sequence[Comparison],
    items: Sequence[Hashable],
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Each model's Bradley-Terry log-strength, refitted on each bootstrap resample of `items`."""
    models = _models(comparisons)
    index = {model: i for i, model in enumerate(models)}
    first = np.array([index[a] for a, _, _ in comparisons])
    second = np.array([index[b] for _, b, _ in comparisons])
    score = np.array([s for _, _, s in comparisons], dtype=float)

    def fit(rows: np.ndarray) -> np.ndarray:
        return bradley_terry(first[rows], second[rows], score[rows], len(models))

    return dict(zip(models, cluster_bootstrap(items, fit, samples, seed), strict=True))


def mean_interval(
    values: Sequence[float], items: Sequence[Hashable], samples: int = DEFAULT_SAMPLES, seed: int = 0
) -> Interval:
    """The mean of `values` (rubric scores, 0/1 outcomes) with its interval over `items`."""
    array = np.asarray(values, dtype=float)
    return cluster_bootstrap(items, lambda rows: np.array([array[rows].mean()]), samples, seed)[0]


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
