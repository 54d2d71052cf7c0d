"""METEOR (the reference Java jar) and CIDEr-D (pycocoevalcap) against hand-computed values."""

from __future__ import annotations

import pytest

from tunesmith.eval.coco import COCO_METRICS, MetricUnavailableError


def test_meteor_scores_as_the_reference_jar_does() -> None:
    sentence = "the quick brown fox jumps high"
    meteor = COCO_METRICS["meteor"]
    assert meteor.score([sentence], [[sentence]]) == pytest.approx(1.0)  # a full match has no fragmentation penalty
    # 4 exact matches in one chunk; "the" is a function word (weight 1 - δ = 0.25, content 0.75):
    # P = 1, R = (3·0.75 + 0.25) / (5·0.75 + 0.25) = 0.625, Fmean = PR / (αP + (1-α)R) with α = 0.85,
    # penalty = γ (chunks/matches)^β = 0.6 · (1/4)^0.2; METEOR = Fmean · (1 - penalty) = 0.36112
    recall = 2.5 / 4.0
    fmean = recall / (0.85 + 0.15 * recall)
    expected = fmean * (1 - 0.6 * 0.25**0.2)
    assert meteor.score(["the quick brown fox"], [[sentence]]) == pytest.approx(expected, abs=1e-4)
    # the corpus value is the jar's aggregate, not the mean of segment scores, and rows resample around it
    stats = meteor.statistics([sentence, "the quick brown fox", "zebra"], [[sentence]] * 3)
    assert stats.shape == (3, 1) and stats[0, 0] > stats[1, 0] > stats[2, 0]


def test_cider_d_is_ten_for_identical_answers_and_zero_for_disjoint_ones() -> None:
    # identical tf-idf vectors: cosine 1 for every n, no length penalty → 10 × mean over n = 10
    references = [["a small red car"], ["two dogs play outside"]]
    assert COCO_METRICS["cider"].score(["a small red car", "two dogs play outside"], references) == pytest.approx(10.0)
    scores = COCO_METRICS["cider"].statistics(["a small red car", "blue sky"], references)[:, 0]
    assert scores[0] > 0 and scores[1] == 0.0


def test_meteor_without_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MetricUnavailableError, match="Java runtime"):
        COCO_METRICS["meteor"].score(["a"], [["a"]])
