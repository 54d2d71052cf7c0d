"""Read example files (JSONL, JSON, CSV, Parquet) in any supported form into normalised examples.

Owns: file readers that keep each row's location, detection of the example form, and per-form
validation with one problem per bad row. Does not own: tokenisation, cleaning or deduplication.
Every bad row is reported (file, line, problem); nothing is ever dropped silently.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tunesmith.config import DataFormat
from tunesmith.data.records import ROLES, DataError, DataProblem, Example, Message

Row = tuple[str, Any]  # (location, parsed row or a DataProblem)

_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
_JSON_COLUMNS = ("messages", "conversations")  # CSV cells that hold JSON lists


def load_examples(path: Path, data_format: DataFormat | None = None) -> list[Example]:
    """Load every example in `path`, detecting its form unless `data_format` is given.

    Raises:
        DataError: listing every invalid row (file and line, first 20 shown).
        FileNotFoundError: when `path` does not exist.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such data file")
    rows = list(_read_rows(path))
    problems = [row for _, row in rows if isinstance(row, DataProblem)]
    good = [(location, row) for location, row in rows if not isinstance(row, DataProblem)]
    if not good and not problems:
        raise DataError([DataProblem(str(path), "file holds no examples")])
    resolved = data_format or (detect_format(good[0][1], good[0][0]) if good else None)
    examples: list[Example] = []
    if resolved is not None:
        parse = _PARSERS[resolved]
        for location, row in good:
            try:
                examples.append(Example(messages=parse(row), source=location))
            except ValueError as error:
                problems.append(DataProblem(location, str(error)))
    if problems:
        problems.sort(key=_location_order)
        raise DataError(problems)
    return examples


def detect_format(row: Any, location: str) -> DataFormat:
    """The example form a row's keys announce."""
    if not isinstance(row, dict):
        raise DataError([DataProblem(location, f"expected an object, got {type(row).__name__}")])
    keys = set(row)
    if "messages" in keys:
        return DataFormat.chat
    if "conversations" in keys:
        return DataFormat.sharegpt
    if {"instruction", "output"} <= keys:
        return DataFormat.alpaca
    if {"prompt", "completion"} <= keys:
        return DataFormat.prompt_completion
    raise DataError(
        [
            DataProblem(
                location,
                f"cannot tell the example form from keys {sorted(keys)}; expected 'messages', 'conversations', "
                "'instruction'+'output' or 'prompt'+'completion' (or pass --format)",
            )
        ]
    )


# ---------------------------------------------------------------- readers: (location, row | problem)


def _read_rows(path: Path) -> Iterator[Row]:
    suffix = path.suffix.lower()
    readers: dict[str, Callable[[Path], Iterator[Row]]] = {
        ".jsonl": _read_jsonl,
        ".json": _read_json,
        ".csv": _read_csv,
        ".parquet": _read_parquet,
    }
    if suffix not in readers:
        raise DataError(
            [DataProblem(str(path), f"unsupported file type '{suffix}' (use .jsonl, .json, .csv, .parquet)")]
        )
    return readers[suffix](path)


def _read_jsonl(path: Path) -> Iterator[Row]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            location = f"{path.name}:{number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield location, DataProblem(location, f"invalid UTF-8 at byte {error.start}")
                continue
            if not text.strip():
                continue
            try:
                yield location, json.loads(text)
            except json.JSONDecodeError as error:
                yield location, DataProblem(location, f"malformed JSON: {error.msg} (column {error.colno})")


def _read_json(path: Path) -> Iterator[Row]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        yield f"{path.name}:{line}", DataProblem(f"{path.name}:{line}", "invalid UTF-8")
        return
    decoder = json.JSONDecoder()
    start = _skip_space(text, 0)
    if start >= len(text) or text[start] != "[":
        location = f"{path.name}:{text.count(chr(10), 0, start) + 1}"
        yield location, DataProblem(location, "a .json data file must hold a list of examples ('[...]')")
        return
    index = _skip_space(text, start + 1)
    while index < len(text) and text[index] != "]":
        location = f"{path.name}:{text.count(chr(10), 0, index) + 1}"
        try:
            row, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as error:
            yield (
                f"{path.name}:{error.lineno}",
                DataProblem(f"{path.name}:{error.lineno}", f"malformed JSON: {error.msg}"),
            )
            return
        yield location, row
        index = _skip_space(text, index)
        if index < len(text) and text[index] == ",":
            index = _skip_space(text, index + 1)


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


def _read_csv(path: Path) -> Iterator[Row]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        yield f"{path.name}:{line}", DataProblem(f"{path.name}:{line}", "invalid UTF-8")
        return
    reader = csv.DictReader(text.splitlines(keepends=True))
    line = 1
    for record in reader:
        line_start, line = line + 1, reader.line_num
        location = f"{path.name}:{line_start}"
        row: dict[str, Any] = {key: value for key, value in record.items() if key is not None and value != ""}
        try:
            for column in _JSON_COLUMNS:
                if isinstance(row.get(column), str):
                    row[column] = json.loads(row[column])
        except json.JSONDecodeError as error:
            yield location, DataProblem(location, f"column '{column}' is not valid JSON: {error.msg}")
            continue
        yield location, row


def _read_parquet(path: Path) -> Iterator[Row]:
    import pyarrow.parquet as pq  # noqa: PLC0415 - only Parquet users pay for pyarrow's import

    table = pq.read_table(path)
    for number, row in enumerate(table.to_pylist(), start=1):
        yield f"{path.name} row {number}", {key: value for key, value in row.items() if value is not None}


def _location_order(problem: DataProblem) -> tuple[int, str]:
    tail = problem.location.rsplit(":", 1)[-1].rsplit(" ", 1)[-1]
    return (int(tail) if tail.isdigit() else 0, problem.location)


# ---------------------------------------------------------------- per-form parsers: row -> messages


def _text(row: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None:
        if required:
            raise ValueError(f"missing field '{key}'")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"field '{key}' must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise ValueError(f"field '{key}' is empty")
    return value


def _require_object(row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise ValueError(f"expected an object, got {type(row).__name__}")
    return row


def _parse_alpaca(row: Any) -> list[Message]:
    row = _require_object(row)
    instruction, extra = _text(row, "instruction"), _text(row, "input", required=False)
    messages: list[Message] = []
    system = _text(row, "system", required=False)
    if system.strip():
        messages.append({"role": "system", "content": system})
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": _text(row, "output")}]
    return messages


def _parse_prompt_completion(row: Any) -> list[Message]:
    row = _require_object(row)
    return [
        {"role": "user", "content": _text(row, "prompt")},
        {"role": "assistant", "content": _text(row, "completion")},
    ]


def _parse_chat(row: Any) -> list[Message]:
    turns = _require_object(row).get("messages")
    if not isinstance(turns, list) or not turns:
        raise ValueError("field 'messages' must be a non-empty list")
    messages: list[Message] = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"messages[{index}] must be an object with 'role' and 'content'")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{index}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"messages[{index}].content must be a non-empty string")
        messages.append({"role": role, "content": content})
    return _check_turn_order(messages, "messages")


def _parse_sharegpt(row: Any) -> list[Message]:
    turns = _require_object(row).get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError("field 'conversations' must be a non-empty list")
    messages: list[Message] = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ValueError(f"conversations[{index}] must be an object with 'from' and 'value'")
        speaker, value = turn.get("from"), turn.get("value")
        if speaker not in _SHAREGPT_ROLES:
            raise ValueError(
                f"conversations[{index}].from is {speaker!r}; expected one of {', '.join(_SHAREGPT_ROLES)}"
            )
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"conversations[{index}].value must be a non-empty string")
        messages.append({"role": _SHAREGPT_ROLES[speaker], "content": value})
    return _check_turn_order(messages, "conversations")


def _check_turn_order(messages: list[Message], field_name: str) -> list[Message]:
    """System (optional, first) then user/assistant alternating, ending on an assistant turn."""
    body = messages[1:] if messages[0]["role"] == "system" else messages
    for index, message in enumerate(body):
        position = index + (len(messages) - len(body))
        expected = "user" if index % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise ValueError(
                f"{field_name}[{position}] is a {message['role']} turn where a {expected} turn belongs"
            )
    if not body or body[-1]["role"] != "assistant":
        raise ValueError(f"{field_name} has no assistant turn at the end: nothing to learn from")
    return messages


_PARSERS: dict[DataFormat, Callable[[Any], list[Message]]] = {
    DataFormat.alpaca: _parse_alpaca,
    DataFormat.chat: _parse_chat,
    DataFormat.sharegpt: _parse_sharegpt,
    DataFormat.prompt_completion: _parse_prompt_completion,
}
