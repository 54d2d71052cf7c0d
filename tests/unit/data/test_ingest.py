from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_jsonl
from tunesmith.config import DataFormat
from tunesmith.data.ingest import load_examples
from tunesmith.data.records import DataError

CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
EXPECTED = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (CHAT, EXPECTED),
        ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}, EXPECTED),
        ({"instruction": "Hi", "input": "", "output": "Hello!"}, EXPECTED),
        ({"prompt": "Hi", "completion": "Hello!"}, EXPECTED),
        (
            {"instruction": "Translate", "input": "chat", "output": "cat", "system": "Be brief."},
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Translate\n\nchat"},
                {"role": "assistant", "content": "cat"},
            ],
        ),
    ],
    ids=["chat", "sharegpt", "alpaca", "prompt_completion", "alpaca_input_system"],
)
def test_each_form_is_detected_and_normalised(tmp_path: Path, row: dict, expected: list) -> None:
    examples = load_examples(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert examples[0].messages == expected
    assert examples[0].source == "d.jsonl:1"


def test_multi_turn_sharegpt_keeps_every_turn(tmp_path: Path) -> None:
    row = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "a"},
                             {"from": "gpt", "value": "b"}, {"from": "human", "value": "c"}, {"from": "gpt", "value": "d"}]}  # fmt: skip
    (example,) = load_examples(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert [m["role"] for m in example.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_json_csv_and_parquet_files(tmp_path: Path) -> None:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(3)]
    json_path = tmp_path / "d.json"
    json_path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    csv_path = tmp_path / "d.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["instruction", "output"])
        writer.writeheader()
        writer.writerows(rows)
    parquet_path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet_path)
    for path in (json_path, csv_path, parquet_path):
        examples = load_examples(path)
        assert [e.reference() for e in examples] == ["a0", "a1", "a2"], path.suffix
    assert load_examples(json_path)[1].source == "d.json:6"  # the line where the second object starts
    assert load_examples(csv_path)[1].source == "d.csv:3"  # header is line 1
    assert load_examples(parquet_path)[2].source == "d.parquet row 3"


def test_csv_chat_messages_column_holds_json(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["messages"])
        writer.writerow([json.dumps(CHAT["messages"])])
    assert load_examples(path)[0].messages == EXPECTED


def test_format_override_wins_over_detection(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"prompt": "Hi", "completion": "Hello!", "messages": "not a list"}]
    )
    assert load_examples(path, DataFormat.prompt_completion)[0].messages == EXPECTED
    with pytest.raises(DataError, match="'messages' must be a non-empty list"):
        load_examples(path)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"messages": [', "malformed JSON"),
        ('{"instruction": "q"}', "missing field 'prompt'"),  # the form comes from the first row
        ('{"prompt": "q", "completion": 5}', "field 'completion' must be a string"),
        ('{"prompt": "  ", "completion": "a"}', "field 'prompt' is empty"),
        ('{"messages": [{"role": "robot", "content": "x"}]}', "messages[0].role is 'robot'"),
        (
            '{"messages": [{"role": "assistant", "content": "x"}]}',
            "messages[0] is a assistant turn where a user turn",
        ),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant turn at the end"),
        (
            '{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]}',
            "content must be",
        ),
        ('{"conversations": [{"from": "bot", "value": "x"}]}', "conversations[0].from is 'bot'"),
        ("[1, 2]", "expected an object"),
    ],
)
def test_bad_rows_name_file_line_and_problem(tmp_path: Path, line: str, problem: str) -> None:
    good = (
        json.dumps({"prompt": "Hi", "completion": "Hello!"}) if "messages" not in line else json.dumps(CHAT)
    )
    if "conversations" in line:
        good = json.dumps({"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]})
    path = tmp_path / "bad.jsonl"
    path.write_text(f"{good}\n{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_examples(path)
    message = str(info.value)
    assert "bad.jsonl:3" in message
    assert problem in message
    assert info.value.total == 1


def test_invalid_utf8_is_reported_by_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(json.dumps(CHAT).encode() + b"\n" + b'{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: invalid UTF-8"):
        load_examples(path)


def test_at_most_twenty_problems_are_listed_with_the_total(tmp_path: Path) -> None:
    rows = [CHAT] + [{"messages": []} for _ in range(25)]
    with pytest.raises(DataError) as info:
        load_examples(write_jsonl(tmp_path / "d.jsonl", rows))
    text = str(info.value)
    assert info.value.total == 25
    assert text.startswith("25 invalid row(s):")
    assert "d.jsonl:2:" in text and "d.jsonl:21:" in text and "d.jsonl:22:" not in text
    assert "... and 5 more" in text


def test_missing_empty_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no examples"):
        load_examples(tmp_path / "empty.jsonl")
    (tmp_path / "d.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="unsupported file type"):
        load_examples(tmp_path / "d.txt")


def test_unknown_form_lists_the_keys_it_saw(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"d.jsonl:1: cannot tell the example form from keys \['question'\]"):
        load_examples(write_jsonl(tmp_path / "d.jsonl", [{"question": "q"}]))
