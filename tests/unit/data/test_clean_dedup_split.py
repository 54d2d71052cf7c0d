from __future__ import annotations

import numpy as np
import pytest

from tunesmith.data import clean, dedup
from tunesmith.data.split import assign_splits, parse_fractions, split_counts


def test_mojibake_html_and_whitespace_are_repaired_without_touching_code() -> None:
    assert clean.fix_unicode("cafÃ© crÃ¨me") == "café crème"
    assert clean.fix_unicode("“curly” ﬁne") == "“curly” ﬁne"  # quotes and ligatures as written
    assert (
        clean.strip_html("<p>Hello <b>world</b></p><script>x()</script>&amp; more") == "Hello world\n& more"
    )
    assert clean.strip_html("if a < b and List<String> x") == "if a < b and List<String> x"
    assert clean.normalize_whitespace("  a  b \r\n\n\n\n    indented  \t") == "a b\n\n    indented"


def test_boilerplate_lines_are_those_repeated_across_many_rows() -> None:
    footer = "Sent from my phone, please excuse typos."
    rows = [[f"question {i}\n{footer}"] for i in range(10)] + [["Short line\nShort line"]] * 10
    counts = clean.count_lines(rows)
    lines = clean.boilerplate_lines(counts, rows=20, min_share=0.3)
    assert lines == {footer}  # "Short line" repeats too, but is too short to be boilerplate
    assert clean.remove_lines(f"question 1\n{footer}", lines) == "question 1"


def test_exact_key_ignores_case_and_whitespace() -> None:
    assert dedup.exact_key("Hello   World\n") == dedup.exact_key("hello world")
    assert dedup.exact_key("hello world") != dedup.exact_key("hello there")


def test_near_duplicates_cluster_and_distinct_texts_do_not() -> None:
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(500)]
    base = [" ".join(rng.choice(words, 80)) for _ in range(50)]
    near = base[3].split()
    near[40] = "changed"
    texts = [*base, " ".join(near)]
    signatures = dedup.MinHasher().signatures(texts)
    pairs = dedup.candidate_pairs(signatures, threshold=0.8)
    assert pairs.tolist() == [[3, 50]]
    assert dedup.clusters(len(texts), pairs) == [[3, 50]]
    assert dedup.similarity(signatures[[3]], signatures[[50]])[0] > 0.8


def test_band_rows_find_pairs_at_the_threshold() -> None:
    assert dedup.band_rows(0.8) == 4 and dedup.band_rows(0.5) <= 2


def test_split_fractions_and_counts() -> None:
    assert parse_fractions("70/15/15") == pytest.approx((0.7, 0.15, 0.15))
    assert parse_fractions("80,20") == pytest.approx((0.8, 0.2, 0.0))
    with pytest.raises(ValueError, match="--split"):
        parse_fractions("a/b")
    assert split_counts(100, (0.7, 0.15, 0.15)) == [70, 15, 15]
    assert split_counts(1, (0.7, 0.15, 0.15)) == [1, 0, 0]


def test_split_is_seeded_stratified_and_grouped() -> None:
    labels = ["a"] * 60 + ["b"] * 40
    first = assign_splits(100, (0.7, 0.15, 0.15), 7, labels=labels)
    assert first == assign_splits(100, (0.7, 0.15, 0.15), 7, labels=labels)
    assert first != assign_splits(100, (0.7, 0.15, 0.15), 8, labels=labels)
    for label, size in (("a", 60), ("b", 40)):
        in_test = sum(1 for s, lab in zip(first, labels, strict=True) if s == "test" and lab == label)
        assert in_test == round(size * 0.15)
    groups = [f"conv{i // 4}" for i in range(100)]
    grouped = assign_splits(100, (0.7, 0.15, 0.15), 7, groups=groups)
    for group in set(groups):
        assert len({s for s, g in zip(grouped, groups, strict=True) if g == group}) == 1
    assert 60 <= grouped.count("train") <= 80 and grouped.count("test") > 0


def test_a_text_that_is_only_boilerplate_is_kept() -> None:
    footer = "Sent from my phone, please excuse typos."
    assert clean.remove_lines(footer, {footer}) == footer


def test_validation_held_out_of_training_data_has_a_floor_a_cap_and_keeps_label_shares() -> None:
    from collections import Counter

    from tunesmith.data.split import held_out_count, held_out_indices, min_examples_to_hold_out

    assert [held_out_count(n) for n in (10, 19, 20, 40, 100, 320, 1000, 15000)] == [
        0,
        0,
        4,
        8,
        20,
        32,
        100,
        256,
    ]
    assert min_examples_to_hold_out() == 20 and held_out_count(min_examples_to_hold_out()) > 0
    chosen = held_out_indices(1000, seed=7)
    assert len(chosen) == 100 and chosen == held_out_indices(1000, seed=7) != held_out_indices(1000, seed=8)
    labels = ["a"] * 600 + ["b"] * 300 + ["c"] * 100
    shares = Counter(labels[index] for index in held_out_indices(1000, seed=7, labels=labels))
    assert shares == {"a": 60, "b": 30, "c": 10}
