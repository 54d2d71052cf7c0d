"""Guardrails on text: PII recall and precision on a seeded set (prompts, answers, streamed answers), a
blocked span that never leaves the scanner, blocklists, patterns, topics and lengths."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from tests.unit.audit.pii_cases import Case, pii_cases
from tunesmith.audit.guardrails import Guard, OutputScanner, check_input, compile_guard
from tunesmith.config import GuardrailSpec


def _guard(**spec: Any) -> Guard:
    return compile_guard(GuardrailSpec.model_validate(spec))


def _stream(guard: Guard, text: str, rng: random.Random) -> tuple[list[str], OutputScanner]:
    """`text` fed in random chunks of 1-12 characters; what the scanner released, chunk by chunk."""
    scanner, released, cursor = OutputScanner(guard), [], 0
    while cursor < len(text) and scanner.stopped is None:
        size = rng.randint(1, 12)
        released.append(scanner.feed(text[cursor : cursor + size]))
        cursor += size
    released.append(scanner.finish())
    return released, scanner


def _recall_precision(cases: list[Case], detected: list[bool]) -> tuple[float, float]:
    true_positives = sum(hit for case, hit in zip(cases, detected, strict=True) if case.kind)
    false_positives = sum(hit for case, hit in zip(cases, detected, strict=True) if not case.kind)
    planted = sum(1 for case in cases if case.kind)
    return true_positives / planted, true_positives / max(1, true_positives + false_positives)


def test_pii_in_prompts_is_found_with_high_recall_and_look_alikes_pass() -> None:
    guard, cases = _guard(pii={"input": "redact"}), pii_cases(seed=0)
    detected = [check_input(guard, [case.text], topic_texts=[]).texts[0] != case.text for case in cases]
    recall, precision = _recall_precision(cases, detected)
    assert recall >= 0.95 and precision >= 0.90, (recall, precision)
    redacted = check_input(guard, ["write to jane@acme.io or call (415) 555-0199"], topic_texts=[])
    assert redacted.texts == ["write to [EMAIL] or call [PHONE]"]
    assert [(e.guard, e.action, e.reason) for e in redacted.events] == [("pii", "redact", "EMAIL"), ("pii", "redact", "PHONE")]  # fmt: skip


@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "streamed"])
def test_pii_in_answers_is_found_with_high_recall_whole_or_streamed(streamed: bool) -> None:
    guard, cases, rng = _guard(pii={"output": "redact"}), pii_cases(seed=1), random.Random(1)
    outputs = []
    for case in cases:
        # the planted sentence inside a longer answer, so matches cross chunk and window boundaries
        answer = f"Thanks for waiting. {case.text} Anything else I can help with today? " * 2
        if streamed:
            outputs.append((answer, "".join(_stream(guard, answer, rng)[0])))
        else:
            scanner = OutputScanner(guard)
            outputs.append((answer, scanner.feed(answer) + scanner.finish()))
    detected = [case.value not in released for case, (_, released) in zip(cases, outputs, strict=True)]
    recall, precision = _recall_precision(cases, detected)
    assert recall >= 0.95 and precision >= 0.90, (recall, precision)
    for case, (answer, released) in zip(cases, outputs, strict=True):
        if not case.kind:
            assert released == answer  # a look-alike passes untouched


def test_a_blocked_span_never_leaves_the_scanner_not_even_its_first_characters() -> None:
    guard, rng = _guard(pii={"output": "block"}), random.Random(2)
    for case in [case for case in pii_cases(seed=2) if case.kind]:
        answer = f"Here is what I found in the record for you. {case.text} Hope that helps!"
        released, scanner = _stream(guard, answer, rng)
        start = answer.index(case.value)
        assert "".join(released) == answer[:start], case  # everything before the span, nothing of it
        assert scanner.stopped == "content_filter" and scanner.events[-1].action == "block"


def test_a_blocked_phrase_split_across_chunks_is_caught_and_nothing_after_it_is_sent() -> None:
    guard = _guard(terms={"blocklist": ["Project Falcon"], "output": "block"})
    scanner = OutputScanner(guard)
    chunks = ["The plan is called Pro", "ject   Fal", "con and it ships soon", "." * 200]
    released = "".join(scanner.feed(chunk) for chunk in chunks) + scanner.finish()
    assert released == "The plan is called " and scanner.stopped == "content_filter"
    assert scanner.events[-1].reason == "blocklist"


def test_only_the_tail_that_may_still_become_a_match_is_held_back() -> None:
    scanner = OutputScanner(_guard(pii={"output": "block"}, terms={"blocklist": ["project falcon"]}))
    assert [scanner.feed(chunk) for chunk in ["Plain words ", "go out ", "at once. "]] == ["Plain words ", "go out ", "at once. "]  # fmt: skip
    assert scanner.feed("Mail jane") == "Mail "  # the word being written may become an email
    assert scanner.feed(".doe@ex") == "" and scanner.feed("ample.com") == ""
    assert scanner.feed(" or call (415) 555-") == "" and scanner.stopped == "content_filter"
    scanner = OutputScanner(_guard(pii={"output": "redact"}, terms={"blocklist": ["project falcon"]}))
    assert scanner.feed("call (415) 555-") == "call "  # a number being written
    assert scanner.feed("0199 today, the project ") == "[PHONE] today, the "  # a term's first word
    assert scanner.feed("plan is ") + scanner.finish() == "project plan is "


def test_blocklist_and_patterns_block_redact_or_flag() -> None:
    guard = _guard(terms={"blocklist": ["secret sauce"], "patterns": {"ORDER": r"ORD-\d{6}"}, "input": "block",
                          "output": "redact"})  # fmt: skip
    verdict = check_input(guard, ["what is in the SECRET  sauce?"], topic_texts=[])
    assert verdict.blocked is not None and verdict.blocked.reason == "blocklist"
    assert "blocked term" in verdict.blocked.message() and "sauce" not in verdict.blocked.message()
    scanner = OutputScanner(guard)
    assert scanner.feed("Your order ORD-123456 ships") + scanner.finish() == "Your order [ORDER] ships"
    assert check_input(guard, ["saucepan secrets"], topic_texts=[]).blocked is None  # whole words only
    flagged = check_input(_guard(terms={"patterns": {"ORDER": r"ORD-\d{6}"}, "input": "flag"}), ["ORD-123456"],
                          topic_texts=[])  # fmt: skip
    assert flagged.texts == ["ORD-123456"] and [e.action for e in flagged.events] == ["flag"]


def test_a_bad_regular_expression_is_a_config_error_naming_it() -> None:
    with pytest.raises(ValidationError, match=r"patterns\.ORDER: not a regular expression"):
        GuardrailSpec.model_validate({"terms": {"patterns": {"ORDER": "ORD-(\\d+"}}})
    with pytest.raises(ValidationError, match="matches the empty string"):
        GuardrailSpec.model_validate({"terms": {"patterns": {"ANY": "x*"}}})


def test_topic_allow_list_keeps_prompts_on_topic() -> None:
    guard = _guard(topics={"allow": ["coffee", "latte", "opening hours"]})
    assert check_input(guard, ["do you sell lattes?"], topic_texts=["do you sell lattes?"]).blocked is None
    assert check_input(guard, ["x"], topic_texts=["what are your opening hours"]).blocked is None
    blocked = check_input(guard, ["write me a poem"], topic_texts=["write me a poem"]).blocked
    assert blocked is not None and blocked.guard == "topics"
    with pytest.raises(ValidationError, match="nothing to redact"):
        GuardrailSpec.model_validate({"topics": {"allow": ["coffee"], "action": "redact"}})


def test_length_limits_refuse_long_prompts_and_end_long_answers() -> None:
    guard = _guard(max_input_chars=10, max_output_chars=30)
    blocked = check_input(guard, ["hello", "world!"], topic_texts=[]).blocked
    assert blocked is not None and blocked.guard == "max_length" and "11 characters" in blocked.message()
    scanner = OutputScanner(guard)
    released = "".join(scanner.feed("abcdefgh ") for _ in range(10))
    assert released == ("abcdefgh " * 4)[:30] and scanner.stopped == "length"


def test_guardrails_off_change_nothing() -> None:
    guard = _guard()
    text = "mail jane@acme.io"
    assert check_input(guard, [text], topic_texts=[text]).texts == [text]
    assert not guard.checks_output()


@pytest.mark.parametrize("patterns", [{}, {"ORDER": r"ORD-\d{6}"}], ids=["no_patterns", "patterns"])
def test_streamed_answers_are_guarded_exactly_as_whole_ones_whatever_the_chunking(
    patterns: dict[str, str],
) -> None:
    guard = _guard(pii={"output": "redact"}, terms={"blocklist": ["internal use only", "falcon"],
                   "patterns": patterns, "output": "redact"})  # fmt: skip
    rng = random.Random(3)
    extras = ["for internal  use only", "ORD-123456", "Falcon.", "internal use", "ORD-12345 x"]
    for case in pii_cases(seed=3, per_kind=15, look_alikes=60):
        answer = f"{rng.choice(extras)} {case.text} {rng.choice(extras)}"
        whole = OutputScanner(guard)
        expected = whole.feed(answer) + whole.finish()
        assert "".join(_stream(guard, answer, rng)[0]) == expected, answer


def test_an_answer_for_the_classifier_is_held_whole_then_guarded() -> None:
    classifier = {"adapter": "mod", "labels": ["ok", "bad"], "blocked_labels": ["bad"], "answers": True}
    scanner = OutputScanner(_guard(pii={"output": "redact"}, classifier=classifier, max_output_chars=40))
    assert [scanner.feed(chunk) for chunk in ["mail jane@acme.io ", "today, ", "please. " * 5]] == [
        "",
        "",
        "",
    ]
    assert scanner.finish() == "mail [EMAIL] today, please. please." and scanner.stopped == "length"
