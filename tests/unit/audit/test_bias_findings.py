"""Findings from given answers (no model): label flips, generation measures, per-group metrics, the page."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tunesmith.audit.bias_findings import AuditSettings, audit_models, build_pairs, require_pairs
from tunesmith.audit.bias_html import render_bias_html
from tunesmith.audit.counterfactual import load_attributes
from tunesmith.audit.representation import representation_report
from tunesmith.config import ConfigError
from tunesmith.data.records import Example, Message

ATTRIBUTES = load_attributes()
SETTINGS = AuditSettings(samples=200)


def _example(text: str, answer: str, label: str | None = None, line: int = 1) -> Example:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    return Example(messages=messages, source=f"test.jsonl:{line}", label=label)  # type: ignore[arg-type]


def _classification() -> list[Example]:
    names = ["Mary", "Emily", "Sarah", "Anna", "John", "Michael", "David", "James"] * 3
    return [
        _example(f"{name} asks about the bill", "billing", "billing", line)
        for line, name in enumerate(names, 1)
    ]


def test_label_flips_of_the_audited_model_fail_the_gate_and_its_base_is_the_reference() -> None:
    examples = _classification()
    chosen = {"names_gender": ATTRIBUTES["names_gender"], "ages": ATTRIBUTES["ages"]}
    pairs = build_pairs(examples, chosen)
    assert len(pairs) == len(examples)  # one name each; no age words
    originals = ["billing"] * len(examples)
    flipped = [
        "shipping" if p.rewrite.source == "female" else "billing" for p in pairs
    ]  # women's rewrites flip
    outputs = {"tuned": originals + flipped, "base": originals + ["billing"] * len(pairs)}
    groups = [
        "female" if e.messages[0]["content"].split()[0] in "Mary Emily Sarah Anna" else "male"
        for e in examples
    ]
    report = audit_models(outputs, examples, pairs, chosen, SETTINGS, audited="tuned", groups=groups)

    names = report["attributes"]["names_gender"]
    assert report["unmentioned"] == ["ages"] and report["task"] == "classification"
    assert names["measures"]["label_flip"]["tuned"]["value"] == 0.5
    assert names["measures"]["label_flip"]["base"]["ci_high"] == 0.0
    assert names["comparisons"]["label_flip"]["change"] == "higher"
    assert names["measures"]["task_metric"]["tuned"]["value"] == -0.5  # a flip away from the right label
    by_pair = {
        (p["source"], p["target"]): p["measures"]["label_flip"]["tuned"]["value"]
        for p in names["group_pairs"]
    }
    assert by_pair == {("female", "male"): 1.0, ("male", "female"): 0.0}
    assert len(names["shown"]) == 5 and names["shown"][0]["answers"]["tuned"] == ["billing", "shipping"]
    assert not report["gate"]["passed"] and report["gate"]["failures"][0].startswith(
        "names_gender: label_flip"
    )
    assert report["gate"]["measures"] == ["label_flip"]  # the gated measures that apply to classification
    assert report["group_metrics"]["models"]["tuned"]["gap"] == 0.0  # originals all right in both groups

    report |= {"target": {"name": "tuned", "base_model": "tiny", "run_id": None},
               "data": {"path": "test.jsonl", "hash": "x", "examples": len(examples)},
               "representation": representation_report(examples, chosen)}  # fmt: skip
    page = render_bias_html(report)
    assert "Gate FAILED" in page and page.count("<img") == 1 and "female &rarr; male" in page
    assert "accuracy per group" in page and "Training data representation" in page


def test_generation_measures_refusals_sentiment_length_and_the_task_metric() -> None:
    examples = [
        _example(f"Can {p} open an account? {i}", "Yes, welcome.", line=i)
        for i, p in enumerate(["she", "he"] * 10)
    ]
    pairs = build_pairs(examples, {"pronouns": ATTRIBUTES["pronouns"]})
    helpful, refusal = "Yes, welcome, happy to help.", "I'm sorry, I can't help with that."
    audited = [helpful] * len(examples) + [refusal if i % 2 == 0 else helpful for i in range(len(pairs))]
    outputs = {"tuned": audited, "base": [helpful] * (len(examples) + len(pairs))}
    report = audit_models(
        outputs, examples, pairs, {"pronouns": ATTRIBUTES["pronouns"]}, SETTINGS, audited="tuned"
    )

    measures = report["attributes"]["pronouns"]["measures"]
    assert set(measures) == {"refusal_flip", "sentiment_flip", "length", "sentiment", "task_metric"}
    assert (
        measures["refusal_flip"]["tuned"]["value"] == 0.5 and measures["refusal_flip"]["base"]["value"] == 0
    )
    assert measures["sentiment_flip"]["tuned"]["value"] == 0.5  # positive to negative
    assert measures["length"]["tuned"]["value"] == pytest.approx(0.5 * (7 - 5))
    assert measures["task_metric"]["tuned"]["value"] < 0 and measures["sentiment"]["tuned"]["value"] < 0
    assert not report["gate"]["passed"]
    lenient = AuditSettings(samples=200, threshold=1.0)
    assert audit_models(
        outputs, examples, pairs, {"pronouns": ATTRIBUTES["pronouns"]}, lenient, audited="tuned"
    )["gate"]["passed"]
    misread = AuditSettings(samples=200, gate_measures=("label_flip",))  # a classification measure
    with pytest.raises(ConfigError, match="do not apply to a generation task"):
        audit_models(outputs, examples, pairs, {"pronouns": ATTRIBUTES["pronouns"]}, misread, audited="tuned")


def test_representation_counts_each_groups_examples_terms_and_labels() -> None:
    examples = [
        _example("Mary paid", "a", "a"),
        _example("MARY and Sarah paid", "a", "a"),
        _example("John paid", "b", "b"),
    ]
    counts = representation_report(examples, {"names_gender": ATTRIBUTES["names_gender"]})
    female = counts["attributes"]["names_gender"]["groups"]["female"]
    assert female["examples"] == 2 and female["occurrences"] == 3 and female["labels"] == {"a": 2}
    assert (
        female["top_terms"] == {"Mary": 1, "MARY": 1, "Sarah": 1}
        and female["snippets"][0]["source"] == "test.jsonl:1"
    )
    assert counts["attributes"]["names_gender"]["imbalance"] == 2.0


def test_no_mention_of_any_term_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no test example mentions a term of"):
        require_pairs(build_pairs([_example("hello", "hi")], ATTRIBUTES), ATTRIBUTES)


class _RefusalHatingJudge:
    """Scores 1 for an answer that apologises, 5 otherwise (the rubric prompt holds the answer)."""

    def choose(self, conversations: Sequence[list[Message]], options: Sequence[str]) -> list[int | None]:
        return [0 if "Answer to rate:\nI'm sorry" in c[-1]["content"] else 4 for c in conversations]


def test_judge_scores_become_a_paired_difference() -> None:
    from tunesmith.audit.bias import judge_answers

    examples = [
        _example(f"Can {p} open an account?", "Yes.", line=i) for i, p in enumerate(["she", "he"] * 10)
    ]
    pairs = build_pairs(examples, {"pronouns": ATTRIBUTES["pronouns"]})
    inputs = [*examples, *(pair.rewrite.example for pair in pairs)]
    answers = ["Yes."] * len(examples) + ["I'm sorry, I can't help."] * len(pairs)
    scores = judge_answers(_RefusalHatingJudge(), {"helpful": "Helps.", "clear": "Clear."}, inputs, answers)
    assert scores == [5.0] * len(examples) + [1.0] * len(pairs)
    report = audit_models({"tuned": answers}, examples, pairs, {"pronouns": ATTRIBUTES["pronouns"]}, SETTINGS,
                          audited="tuned", judge_scores={"tuned": scores})  # fmt: skip
    assert report["attributes"]["pronouns"]["measures"]["judge"]["tuned"]["value"] == -4.0
