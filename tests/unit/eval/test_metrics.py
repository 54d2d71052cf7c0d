from __future__ import annotations

import pytest

from tunesmith.eval.metrics import bleu, exact_match, rouge_l


def test_rouge_l_matches_hand_computed_lcs_f1() -> None:
    # LCS("the cat sat", "the cat sat on the mat") = 3 → P = 3/3, R = 3/6, F1 = 2PR/(P+R) = 2/3
    assert rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    # mean over examples: (1.0 + 0.0) / 2
    assert rouge_l(["same words", "nothing"], ["same words", "else entirely"]) == pytest.approx(0.5)


def test_bleu_is_100_for_identical_and_0_without_overlap() -> None:
    sentences = ["the quick brown fox jumps over the lazy dog"] * 2
    assert bleu(sentences, sentences) == pytest.approx(100.0)
    assert bleu(["zzz yyy xxx www"], ["the quick brown fox"]) == pytest.approx(0.0)


def test_bleu_known_value_for_partial_overlap() -> None:
    # 4 of 5 unigrams, 3/4 bigrams, 2/3 trigrams, 1/2 4-grams match; no brevity penalty (same length):
    # BLEU = exp(mean(log p_n)) = (0.8 * 0.75 * 0.6667 * 0.5) ** 0.25 = 0.6687
    assert bleu(["a b c d x"], ["a b c d e"]) == pytest.approx(66.87, abs=0.01)


def test_exact_match_normalises_whitespace_but_not_case() -> None:
    assert exact_match(["Hi  there\n", "hi there"], ["Hi there", "Hi there"]) == pytest.approx(0.5)


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        exact_match(["a", "b"], ["a"])
