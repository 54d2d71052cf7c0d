"""METEOR (the reference Java jar) and CIDEr-D (pycocoevalcap) against hand-computed values."""

from __future__ import annotations

import pytest

from tunesmith.eval.coco import COCO_METRICS, MetricUnavailableError, meteor_scores


def test_meteor_scores_as_the_reference_jar_does() -> None:
    sentence = "the quick brown fox jumps high"
    # 4 exact matches in one chunk; "the" is a function word (weight 1 - δ = 0.25, content 0.75):
    # P = 1, R = (3·0.75 + 0.25) / (5·0.75 + 0.25) = 0.625, Fmean = PR / (αP + (1-α)R) with α = 0.85,
    # penalty = γ (chunks/matches)^β = 0.6 · (1/4)^0.2; METEOR = Fmean · (1 - penalty) = 0.36112
    recall = 2.5 / 4.0
    partial = recall / (0.85 + 0.15 * recall) * (1 - 0.6 * 0.25**0.2)
    predictions, references = [sentence, "the quick brown fox", "zebra"], [[sentence]] * 3
    corpus, segments = meteor_scores(predictions, references)
    # a full match has no fragmentation penalty; nothing shared scores 0
    assert segments == pytest.approx([1.0, partial, 0.0], abs=1e-4)
    # the corpus value is the jar's aggregate over all segments, not their mean
    assert 0 < corpus < 1 and corpus != pytest.approx(segments.mean())


def test_cider_d_is_ten_for_identical_answers_and_zero_for_disjoint_ones() -> None:
    # identical tf-idf vectors: cosine 1 for every n, no length penalty → 10 × mean over n = 10
    references = [["a small red car"], ["two dogs play outside"]]
    assert COCO_METRICS["cider"].score(
        ["a small red car", "two dogs play outside"], references
    ) == pytest.approx(10.0)
    scores = COCO_METRICS["cider"].statistics(["a small red car", "blue sky"], references)[:, 0]
    assert scores[0] > 0 and scores[1] == 0.0


def test_meteor_without_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(MetricUnavailableError, match="Java runtime"):
        COCO_METRICS["meteor"].score(["a"], [["a"]])
