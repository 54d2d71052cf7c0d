from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunesmith.config import PrepareSpec
from tunesmith.data.ingest import load_records, load_training_records
from tunesmith.data.prepare import prepare_data
from tunesmith.data.records import DataError, PreferenceExample, RatedCompletion

SYSTEM = {"role": "system", "content": "Answer briefly."}
USER = {"role": "user", "content": "Where is the café?"}


def _pair(source: str, prompt: list[dict[str, str]] | None = None) -> PreferenceExample:
    return PreferenceExample(prompt or [USER], "On Elm Street.", "I don't know.", source)


def test_the_common_preference_forms_read_as_the_same_pair(tmp_path: Path) -> None:
    rows = [
        {"prompt": USER["content"], "chosen": "On Elm Street.", "rejected": "I don't know."},
        {"prompt": [SYSTEM, USER], "chosen": [{"role": "assistant", "content": "On Elm Street."}],
         "rejected": [{"role": "assistant", "content": "I don't know."}]},
        {"chosen": [USER, {"role": "assistant", "content": "On Elm Street."}],
         "rejected": [USER, {"role": "assistant", "content": "I don't know."}]},
        {"input": {"messages": [SYSTEM, USER]},
         "preferred_output": [{"role": "assistant", "content": "On Elm Street."}],
         "non_preferred_output": [{"role": "assistant", "content": "I don't know."}]},
    ]  # fmt: skip
    path = tmp_path / "p.jsonl"
    for row in rows:  # each form on its own, as the form is detected from a file's first row
        write_jsonl(path, [row])
        [pair] = load_records(path)
        expected_prompt = row.get("prompt") if isinstance(row.get("prompt"), list) else None
        if "input" in row:
            expected_prompt = [SYSTEM, USER]
        assert pair == _pair("p.jsonl:1", expected_prompt), row


def test_rated_answers_need_a_boolean_label(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "Hi", "completion": "Hello!", "label": True},
            {"prompt": "Hi", "completion": "Go.", "label": "no"},
        ],
    )
    with pytest.raises(DataError, match=r"r.jsonl:2: field 'label' must be true .* got 'no'"):
        load_records(path)
    write_jsonl(path, [{"prompt": "Hi", "completion": "Go.", "label": False}])
    assert load_records(path) == [
        RatedCompletion([{"role": "user", "content": "Hi"}], "Go.", False, "r.jsonl:1")
    ]


def test_bad_pairs_are_each_reported_with_their_line(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "Q", "chosen": "a", "rejected": "b"},
            {"prompt": "Q", "chosen": "same", "rejected": "same "},
            {"prompt": "Q", "chosen": "", "rejected": "b"},
            {"prompt": [SYSTEM], "chosen": "a", "rejected": "b"},
            {"prompt": [USER, {"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"},
            {"input": {"messages": [USER]}, "preferred_output": [USER], "non_preferred_output": "b"},
        ],
    )
    with pytest.raises(DataError) as raised:
        load_records(path)
    assert [str(problem) for problem in raised.value.problems] == [
        "p.jsonl:2: chosen and rejected are the same answer: the pair prefers nothing",
        "p.jsonl:3: field 'chosen' is empty",
        "p.jsonl:4: prompt has no user turn: nothing asks for the answers",
        "p.jsonl:5: prompt ends with a assistant turn; it must end with the user's turn",
        "p.jsonl:6: preferred_output must end with an assistant turn, not a user turn",
    ]


def test_prepare_keeps_chat_prompts_of_pairs(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = [
        {"prompt": [SYSTEM, {"role": "user", "content": f"Question number {i} about opening hours?"}],
         "chosen": f"We open at {i} am.", "rejected": "Dunno."}
        for i in range(1, 21)
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    spec = PrepareSpec(
        inputs=[source],
        out=tmp_path / "out",
        model=str(tiny_model_dir),
        calibrate=False,
        near_dup_threshold=None,
    )
    prepare_data(spec)
    written = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert written[0]["prompt"][0] == SYSTEM and written[0]["rejected"] == "Dunno."
    loaded, digest = load_training_records(tmp_path / "out", "train", PreferenceExample)
    assert digest and len(loaded) == len(written) and loaded[0].prompt[0] == SYSTEM


def test_prepare_keeps_the_labels_of_rated_answers(tiny_model_dir: Path, tmp_path: Path) -> None:
    rated = [
        {"prompt": f"Question number {i} about the opening hours?", "completion": f"We open at {i} am.", "label": i % 2 == 0}
        for i in range(1, 21)
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "rated.jsonl", rated)
    spec = PrepareSpec(
        inputs=[source],
        out=tmp_path / "out",
        model=str(tiny_model_dir),
        calibrate=False,
        near_dup_threshold=None,
    )
    prepare_data(spec)
    loaded, _ = load_training_records(tmp_path / "out", "train", RatedCompletion)
    written = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert {row["label"] for row in written} == {True, False} and len(loaded) == len(written)
    assert written[0]["prompt"].startswith("Question number")
