"""Metric values against hand-computed cases and the reference packages' own corpus functions."""

from __future__ import annotations

import numpy as np
import pytest
import sacrebleu

from tunesmith.eval.metrics import (
    GENERATION_METRICS,
    NUMERIC_METRICS,
    QA_METRICS,
    bleu,
    classification_metrics,
    classification_statistics,
    exact_match,
    extract_number,
    per_class,
    rouge_l,
)


def test_rouge_l_matches_hand_computed_lcs_f1() -> None:
    # LCS("the cat sat", "the cat sat on the mat") = 3 → P = 3/3, R = 3/6, F1 = 2PR/(P+R) = 2/3
    assert rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    # mean over examples: (1.0 + 0.0) / 2
    assert rouge_l(["same words", "nothing"], ["same words", "else entirely"]) == pytest.approx(0.5)


def test_rouge_1_and_2_hand_computed_and_best_of_several_references() -> None:
    prediction, reference = ["the cat sat"], [["the cat sat on the mat"]]
    assert GENERATION_METRICS["rouge_1"].score(prediction, reference) == pytest.approx(2 / 3)
    # bigrams: 2 predicted, 5 in the reference, 2 shared → P = 1, R = 0.4, F1 = 0.8 / 1.4
    assert GENERATION_METRICS["rouge_2"].score(prediction, reference) == pytest.approx(0.8 / 1.4)
    assert GENERATION_METRICS["rouge_l"].score(prediction, [["zzz", "the cat sat"]]) == pytest.approx(1.0)


def test_bleu_is_100_for_identical_and_0_without_overlap() -> None:
    sentences = ["the quick brown fox jumps over the lazy dog"] * 2
    assert bleu(sentences, sentences) == pytest.approx(100.0)
    assert bleu(["zzz yyy xxx www"], ["the quick brown fox"]) == pytest.approx(0.0)


def test_bleu_known_value_for_partial_overlap() -> None:
    # 4 of 5 unigrams, 3/4 bigrams, 2/3 trigrams, 1/2 4-grams match; no brevity penalty (same length):
    # BLEU = exp(mean(log p_n)) = (0.8 * 0.75 * 0.6667 * 0.5) ** 0.25 = 0.6687
    assert bleu(["a b c d x"], ["a b c d e"]) == pytest.approx(66.87, abs=0.01)


def test_corpus_bleu_and_chrf_equal_sacrebleu_with_a_variable_number_of_references() -> None:
    predictions = ["the cat is on the mat", "a dog barks loudly at night", "hello there world"]
    references = [
        ["the cat sat on the mat", "a cat is on the mat"],
        ["the dog barks at night"],
        ["hello world"],
    ]
    streams = [[r[0] for r in references], [r[1] if len(r) > 1 else None for r in references]]
    expected_bleu = sacrebleu.corpus_bleu(predictions, streams).score  # type: ignore[arg-type]
    expected_chrf = sacrebleu.corpus_chrf(predictions, streams).score  # type: ignore[arg-type]
    assert GENERATION_METRICS["bleu"].score(predictions, references) == pytest.approx(expected_bleu)
    assert GENERATION_METRICS["chrf"].score(predictions, references) == pytest.approx(expected_chrf)
    assert 0 < expected_bleu < 100 and 0 < expected_chrf < 100


def test_exact_match_normalises_whitespace_but_not_case() -> None:
    assert exact_match(["Hi  there\n", "hi there"], ["Hi there", "Hi there"]) == pytest.approx(0.5)


def test_qa_exact_match_and_token_f1_use_squad_normalisation() -> None:
    em, f1 = QA_METRICS["exact_match"], QA_METRICS["token_f1"]
    assert em.score(["The Eiffel Tower!"], [["eiffel tower"]]) == 1.0
    # "eiffel tower in paris" vs "eiffel tower": 2 shared of 4 predicted / 2 expected → P .5, R 1, F1 2/3
    assert f1.score(["the Eiffel Tower in Paris"], [["Eiffel Tower"]]) == pytest.approx(2 / 3)
    assert f1.score(["Paris"], [["London", "paris"]]) == 1.0  # best reference


def test_numeric_answer_mode_reads_the_marked_or_last_number() -> None:
    assert extract_number("6 * 4 = 24 apples\n#### 1,234") == 1234.0
    assert extract_number("so she pays 18.5 dollars.") == 18.5
    assert extract_number("no idea") is None
    predictions = ["The answer is 1,234.", "#### 12", "I cannot say"]
    references = [["Working... #### 1234"], ["#### 13"], ["#### 5"]]
    assert NUMERIC_METRICS["numeric_match"].statistics(predictions, references)[:, 0].tolist() == [1, 0, 0]


def test_classification_metrics_hand_computed() -> None:
    # gold 0 0 1 1 2, predicted 0 1 1 1 0. Class 0: P 1/2 R 1/2 F 1/2; class 1: P 2/3 R 1 F 0.8;
    # class 2: never predicted, P 0 R 0 F 0. (scikit-learn, zero_division=0, gives the same.)
    stats = classification_statistics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0])
    table = classification_metrics(3)
    assert table["accuracy"](stats) == pytest.approx(0.6)
    assert table["macro_precision"](stats) == pytest.approx((0.5 + 2 / 3 + 0) / 3)
    assert table["macro_recall"](stats) == pytest.approx((0.5 + 1 + 0) / 3)
    assert table["macro_f1"](stats) == pytest.approx((0.5 + 0.8 + 0) / 3)
    assert per_class(stats, 3)["support"].tolist() == [2, 2, 1]
    # a label absent from both gold and predictions (index 3 of 4) does not dilute the macro average
    assert classification_metrics(4)["macro_f1"](stats) == pytest.approx((0.5 + 0.8 + 0) / 3)


def test_mismatched_lengths_are_an_error() -> None:
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        exact_match(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="at least one reference"):
        GENERATION_METRICS["bleu"].statistics(["a"], [[]])
    assert np.array_equal(classification_statistics([1], [2]), np.array([[1, 2]]))


def test_in_scope_accuracy_and_out_of_scope_recall_hand_computed() -> None:
    from tunesmith.eval.metrics import out_of_scope_metrics

    # Out of scope is label 2. In scope: gold 0 0 1 predicted 0 2 1 (2 of 3 right; the out-of-scope
    # prediction is wrong). Out of scope: gold 2 2 predicted 2 0 (1 of 2 caught).
    stats = classification_statistics([0, 0, 1, 2, 2], [0, 2, 1, 2, 0])
    table = out_of_scope_metrics(2)
    assert table["in_scope_accuracy"](stats) == pytest.approx(2 / 3)
    assert table["out_of_scope_recall"](stats) == pytest.approx(1 / 2)
    assert table["out_of_scope_recall"](stats[:3]) == 0.0  # a resample without out-of-scope rows
