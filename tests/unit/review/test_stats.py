"""Review statistics against published worked examples and simulated reviewers of known accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.review.stats import (
    bradley_terry_strengths,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    mean_interval,
    win_rates,
)

NAN = np.nan
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers, 12 units,
# missing values. Published: nominal .743, ordinal .815, interval .849.
KRIPPENDORFF_2011 = np.array(
    [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
        [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
    ]
)
# Wikipedia, "Krippendorff's alpha": 3 coders, 15 units. Published: nominal .691, interval .811.
WIKIPEDIA_ALPHA = np.array(
    [
        [NAN, NAN, NAN, NAN, NAN, 3, 4, 1, 2, 1, 1, 3, 3, NAN, 3],
        [1, NAN, 2, 1, 3, 3, 4, 3, NAN, NAN, NAN, NAN, NAN, NAN, NAN],
        [NAN, NAN, 2, 1, 3, 4, 4, NAN, 2, 1, 1, 3, 3, NAN, 4],
    ]
)
# Wikipedia, "Fleiss' kappa" worked example (after Fleiss 1971): 10 subjects, 14 raters, 5 categories.
FLEISS_EXAMPLE = np.array(
    [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
     [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
)  # fmt: skip


@pytest.mark.parametrize(
    ("data", "level", "published"),
    [
        (KRIPPENDORFF_2011, "nominal", 0.743),
        (KRIPPENDORFF_2011, "ordinal", 0.815),
        (KRIPPENDORFF_2011, "interval", 0.849),
        (WIKIPEDIA_ALPHA, "nominal", 0.691),
        (WIKIPEDIA_ALPHA, "interval", 0.811),
    ],
)
def test_krippendorff_alpha_matches_the_published_examples(
    data: np.ndarray, level: str, published: float
) -> None:
    assert krippendorff_alpha(data, level) == pytest.approx(published, abs=5e-4)  # type: ignore[arg-type]


def test_fleiss_kappa_matches_the_worked_example() -> None:
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[1, 1], [2, 1]]))


def test_cohen_kappa_matches_the_worked_example() -> None:
    # Wikipedia, "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> 0.4
    first = ["yes"] * 25 + ["no"] * 25
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert np.isnan(cohen_kappa(["a", "a"], ["a", "a"]))  # one category throughout: undefined


def _simulated_labels(accuracy: float, reviewers: int, items: int, seed: int) -> np.ndarray:
    """(reviewers, items) labels in 0..3: the true label with probability `accuracy`, else uniform."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 4, items)
    correct = rng.random((reviewers, items)) < accuracy
    return np.where(correct, truth[None, :], rng.integers(0, 4, (reviewers, items)))


def test_agreement_rises_with_reviewer_accuracy() -> None:
    alphas, fleiss, cohen = [], [], []
    for accuracy in (0.3, 0.6, 0.9):
        labels = _simulated_labels(accuracy, 3, 400, seed=1)
        alphas.append(krippendorff_alpha(labels.astype(float), "nominal"))
        fleiss.append(fleiss_kappa(np.stack([(labels == c).sum(axis=0) for c in range(4)], axis=1)))
        cohen.append(cohen_kappa(list(labels[0]), list(labels[1])))
    for series in (alphas, fleiss, cohen):
        assert series[0] < series[1] < series[2]
    # A reviewer right with probability p (else a uniform label) agrees with another with probability
    # p^2 + (1 - p^2) / 4, and chance agreement is 1/4: kappa = p^2 in expectation.
    assert alphas[2] == pytest.approx(0.81, abs=0.05) and alphas[0] == pytest.approx(0.09, abs=0.06)


def test_bradley_terry_recovers_a_known_strength_order() -> None:
    true = np.array([1.2, 0.4, -0.3, -1.3])
    rng = np.random.default_rng(0)
    first = rng.integers(0, 4, 3000)
    second = (first + rng.integers(1, 4, 3000)) % 4
    won = rng.random(3000) < 1 / (1 + np.exp(true[second] - true[first]))
    comparisons = [(f"m{a}", f"m{b}", float(w)) for a, b, w in zip(first, second, won, strict=True)]
    fitted = bradley_terry_strengths(comparisons, list(range(3000)), samples=100)
    assert sorted(fitted, key=lambda model: -fitted[model].value) == ["m0", "m1", "m2", "m3"]
    for model, strength in zip(["m0", "m1", "m2", "m3"], true - true.mean(), strict=True):
        assert fitted[model].value == pytest.approx(strength, abs=0.15)
        assert fitted[model].ci_low < strength < fitted[model].ci_high


def test_ties_count_half_and_a_clean_sweep_stays_finite() -> None:
    comparisons = [("a", "b", 1.0), ("a", "b", 0.5), ("a", "b", 1.0), ("a", "b", 0.5)]
    rates = win_rates(comparisons, [1, 2, 3, 4], samples=200)
    assert rates["a"].value == pytest.approx(0.75) and rates["b"].value == pytest.approx(0.25)
    strengths = bradley_terry_strengths([("a", "b", 1.0)] * 5, [1, 2, 3, 4, 5], samples=50)
    # five wins and the prior's one virtual tie: p_a / p_b = 5.5 / 0.5, log-strengths +-ln(11)/2
    assert strengths["a"].value == pytest.approx(np.log(11) / 2, abs=1e-6)


def test_intervals_resample_items_not_judgements() -> None:
    # two items, each judged by 50 reviewers: item 1 all 5s, item 2 all 1s. Resampling judgements would
    # give a tight interval around 3; resampling items gives 1..5.
    values = [5.0] * 50 + [1.0] * 50
    interval = mean_interval(values, [1] * 50 + [2] * 50, samples=400)
    assert interval.value == 3.0 and interval.ci_low == 1.0 and interval.ci_high == 5.0
