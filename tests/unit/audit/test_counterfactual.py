"""Counterfactual rewrites: whole words, case kept, possessives, both directions in one pass, term files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.audit.counterfactual import (
    load_attributes,
    mentioned_groups,
    parse_attributes,
    rewrite_example,
    swap_text,
)
from tunesmith.config import ConfigError
from tunesmith.data.records import Example

ATTRIBUTES = load_attributes()


@pytest.mark.parametrize(
    ("attribute", "text", "expected"),
    [
        ("names_gender", "Mary's order for John", "John's order for Mary"),  # possessive; no double swap
        ("names_gender", "MARY called; Mary-Jane too", "JOHN called; John-Jane too"),  # capitals kept
        ("names_gender", "Maryanne asked", "Maryanne asked"),  # whole words only
        ("names_gender", "mark the order for Mark", "mark the order for Mark"),  # not a name; not in the list
        ("names_gender", "ask mary", "ask mary"),  # a name matches capitalised only
        ("pronouns", "He told her the news.", "She told him the news."),
        ("pronouns", "I saw her book and gave her the pen", "I saw his book and gave him the pen"),
        ("pronouns", "She said it is his.", "He said it is hers."),
        ("pronouns", "SHE thanked herself", "HE thanked himself"),
        ("ages", "a 20-year-old teenager", "a 70-year-old retiree"),
    ],
)
def test_swaps_keep_case_and_whole_words_and_run_both_ways_at_once(
    attribute: str, text: str, expected: str
) -> None:
    groups = list(ATTRIBUTES[attribute].groups)
    assert swap_text(ATTRIBUTES[attribute], groups[0], groups[1], text) == expected


def test_a_term_listed_twice_takes_its_first_partner_before_a_word_and_its_last_elsewhere() -> None:
    chinese = "Chinese food, and the Chinese are in China."
    swapped = swap_text(ATTRIBUTES["nationalities"], "chinese", "american", chinese)
    assert swapped == "American food, and the Americans are in America."


def _example(text: str, answer: str = "ok") -> Example:
    return Example(
        messages=[{"role": "user", "content": text}, {"role": "assistant", "content": answer}], source="t:1"
    )


def test_each_mentioned_group_is_rewritten_to_every_other_group_once() -> None:
    both = list(rewrite_example(_example("Mary met John", "Mary is late"), ATTRIBUTES["names_gender"]))
    assert [(r.source, r.target) for r in both] == [("female", "male")]  # one pair, not two
    assert both[0].example.messages[0]["content"] == "John met Mary"
    assert both[0].example.reference() == "John is late"  # the reference too, for the task metric
    origins = list(rewrite_example(_example("Priya asked"), ATTRIBUTES["names_origin"]))
    assert len(origins) == 5 and {r.source for r in origins} == {"south_asian"}
    assert {r.example.messages[0]["content"] for r in origins} == {
        "Emily asked", "Amara asked", "Mei asked", "Maria asked", "Fatima asked",
    }  # fmt: skip
    assert list(rewrite_example(_example("nobody here"), ATTRIBUTES["names_gender"])) == []
    assert mentioned_groups(ATTRIBUTES["pronouns"], "she and he") == ["female", "male"]


def test_a_terms_file_adds_and_replaces_attributes(tmp_path: Path) -> None:
    path = tmp_path / "terms.yaml"
    path.write_text(
        "pronouns:\n  groups:\n    a: [she]\n    b: [they]\n"
        "sports:\n  description: fans\n  groups:\n    football: [footballer]\n    tennis: [tennis player]\n"
    )
    attributes = load_attributes(path)
    assert attributes["pronouns"].groups == {"a": ("she",), "b": ("they",)}
    assert "names_gender" in attributes
    assert swap_text(attributes["sports"], "football", "tennis", "A Footballer.") == "A Tennis player."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ok:\n  groups: {a: [x], b: [y]}\nbad:\n  groups:\n    a: [x, y]\n    b: [z]\n", "terms.yaml:3: attribute 'bad': groups list"),
        ("one:\n  groups: {a: [x]}\n", "terms.yaml:1: attribute 'one' needs at least two groups"),
        ("x:\n  terms: [a]\n", "terms.yaml:1: attribute 'x' needs `groups:`"),
        ("x:\n  groups: {a: [x], b: [1]}\n", "terms.yaml:1: attribute 'x', group 'b': expected a list of words"),
        ("- a\n", "terms.yaml: expected a mapping"),
    ],
)  # fmt: skip
def test_a_bad_terms_file_names_the_line_of_the_attribute(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_attributes(text, "terms.yaml")


def test_every_shipped_attribute_loads_with_aligned_groups() -> None:
    assert set(ATTRIBUTES) == {
        "names_gender", "names_origin", "pronouns", "gender_words", "ages", "nationalities", "religions",
    }  # fmt: skip
