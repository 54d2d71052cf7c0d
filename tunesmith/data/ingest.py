"""Read example files and folders in any supported form into normalised records.

Owns: readers for JSONL, JSON, CSV, Parquet, saved Hugging Face `datasets` folders and folders of
.txt/.md documents, each keeping every row's location; column mapping; detection of the example form;
per-form validation with one problem per bad row (a chat row's optional `references` list included);
and reading one split of a prepared dataset folder.
Does not own: tokenisation, cleaning or deduplication (see `prepare`). Every bad row is reported
(file, line, problem); nothing is ever dropped silently.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from tunesmith.config import DataFormat
from tunesmith.data.readers import RecordRow, is_hf_dataset, read_documents, read_rows
from tunesmith.data.records import (
    ROLES,
    DataError,
    DataProblem,
    Document,
    Example,
    Message,
    PreferenceExample,
    RatedCompletion,
    Record,
)
from tunesmith.data.swap import recover_interrupted_swap

DEFAULT_INSTRUCTION = "Classify the following text. Answer with the label only."
MANIFEST = "dataset.json"  # marks a folder written by `tunesmith data prepare`
RecordT = TypeVar("RecordT", PreferenceExample, RatedCompletion)
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
}
_NOT_CHAT = {
    PreferenceExample: "preference pairs (prompt/chosen/rejected), for --method dpo or orpo, not chat examples",
    RatedCompletion: "rated answers (prompt/completion/label), for --method kto, not chat examples",
    Document: "plain-text documents (continued pretraining), not chat examples",
}
_KINDS = {
    Example: "chat examples",
    PreferenceExample: "preference pairs (prompt/chosen/rejected)",
    RatedCompletion: "rated answers (prompt/completion/label)",
    Document: "plain-text documents",
}


def load_examples(
    path: Path, data_format: DataFormat | None = None, *, instruction: str | None = None
) -> list[Example]:
    """Load every chat example in `path`, detecting its form unless `data_format` is given.

    Classification rows (`text`/`label`) become a user turn (`instruction`, a blank line, the text) and an
    assistant turn (the label); `instruction` defaults to `DEFAULT_INSTRUCTION`.

    Raises:
        DataError: listing every invalid row (file and line, first 20 shown), or naming the data as
            preference pairs or documents, which are not chat examples.
        FileNotFoundError: when `path` does not exist.
    """
    records = load_records(path, data_format, instruction=instruction)
    for record in records:
        if not isinstance(record, Example):
            raise DataError([DataProblem(record.source, f"{path} holds {_NOT_CHAT[type(record)]}")])
    return [record for record in records if isinstance(record, Example)]


def load_records(
    path: Path,
    data_format: DataFormat | None = None,
    *,
    instruction: str | None = None,
    column_map: Mapping[str, str] | None = None,
) -> list[Record]:
    """Every record in `path` (chat examples, preference pairs or documents); raises on any bad row."""
    records: list[Record] = []
    problems: list[DataProblem] = []
    for _, _, item in iter_records(path, data_format, instruction=instruction, column_map=column_map):
        if isinstance(item, DataProblem):
            problems.append(item)
        else:
            records.append(item)
    if problems:
        problems.sort(key=_location_order)
        raise DataError(problems)
    if not records:
        raise DataError([DataProblem(str(path), "file holds no examples")])
    return records


def is_prepared_dataset(path: Path) -> bool:
    """True for a folder written by `tunesmith data prepare` (it holds the `dataset.json` manifest).

    A folder that a `data prepare` killed mid-swap left aside is put back first (see `swap`).
    """
    recover_interrupted_swap(path)
    return (path / MANIFEST).is_file()


def load_split(
    path: Path, split: str, data_format: DataFormat | None = None
) -> tuple[list[Example], str | None]:
    """One split of a prepared dataset folder with the dataset's content hash, or a plain data file.

    A folder written by `tunesmith data prepare` (it holds `dataset.json`) gives `<split>.jsonl` and the
    manifest's content hash; any other path is read with `load_examples` (in `data_format` when given)
    and gives no hash.
    """
    manifest = path / MANIFEST
    if not is_prepared_dataset(path):
        return load_examples(path, data_format), None
    split_file = path / f"{split}.jsonl"
    if not split_file.is_file():
        raise FileNotFoundError(f"{path}: prepared dataset has no '{split}' split ({split_file.name})")
    digest = json.loads(manifest.read_text(encoding="utf-8"))["hash"]
    return load_examples(split_file), str(digest)


def load_training_records(
    path: Path, split: str, kind: type[RecordT], data_format: DataFormat | None = None
) -> tuple[list[RecordT], str | None]:
    """Records of one kind (preference pairs, rated answers) in `path`, as `load_split` reads examples.

    A prepared dataset folder gives its `<split>.jsonl` and the manifest's content hash; any other path
    is read whole and gives no hash. Raises `DataError` naming the file when it holds another kind.
    """
    digest: str | None = None
    if is_prepared_dataset(path):
        digest = str(json.loads((path / MANIFEST).read_text(encoding="utf-8"))["hash"])
        path = path / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path.parent}: prepared dataset has no '{split}' split ({path.name})")
    records = load_records(path, data_format)
    for record in records:
        if not isinstance(record, kind):
            problem = f"{path} holds {_KINDS[type(record)]}; this objective trains on {_KINDS[kind]}"
            raise DataError([DataProblem(record.source, problem)])
    return [record for record in records if isinstance(record, kind)], digest


def iter_records(
    path: Path,
    data_format: DataFormat | None = None,
    *,
    instruction: str | None = None,
    column_map: Mapping[str, str] | None = None,
) -> Iterator[RecordRow]:
    """Stream `(location, row, record or problem)` for every row of a file or folder, in order.

    The form is detected from the first row that announces one (rows before it are reported) unless
    `data_format` is given. `column_map` renames source columns to the names a form expects
    (`{"instruction": "question"}` reads the `question` column as `instruction`).
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file or folder")
    if path.is_dir() and not is_hf_dataset(path):
        yield from read_documents(path)
        return
    resolved = data_format
    for location, row in read_rows(path):
        if isinstance(row, DataProblem):
            yield location, None, row
            continue
        if column_map and isinstance(row, dict):
            row, missing = _apply_map(row, column_map)
            if missing:
                yield location, row, DataProblem(location, missing)
                continue
        if resolved is None:
            try:
                resolved = detect_format(row, location)
            except DataError as error:
                yield location, row, error.problems[0]
                continue
        yield location, row, _parse(resolved, row, location, instruction or DEFAULT_INSTRUCTION)


def _parse(data_format: DataFormat, row: Any, location: str, instruction: str) -> Record | DataProblem:
    try:
        if data_format is DataFormat.classification:
            messages, label = _parse_classification(row, instruction)
            return Example(messages=messages, source=location, label=label)
        if data_format is DataFormat.preference:
            return _parse_preference(row, location)
        if data_format is DataFormat.rated:
            return _parse_rated(row, location)
        if data_format is DataFormat.text:
            return Document(text=_text(_require_object(row), "text"), source=location)
        return Example(messages=_PARSERS[data_format](row), source=location, references=_references(row))
    except ValueError as error:
        return DataProblem(location, str(error))


def _references(row: dict[str, Any]) -> tuple[str, ...]:
    """A chat row's optional `references`: more acceptable answers, which evaluation scores against."""
    value = row.get("references")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise ValueError("field 'references' must be a list of non-empty strings")
    return tuple(value)


def _apply_map(row: dict[str, Any], column_map: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    sources = set(column_map.values())
    mapped = {key: value for key, value in row.items() if key not in sources}
    for target, source in column_map.items():
        if source not in row:
            return row, f"missing column '{source}' (mapped to '{target}')"
        mapped[target] = row[source]
    return mapped, ""


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
    if {"chosen", "rejected"} <= keys or {"input", "preferred_output", "non_preferred_output"} <= keys:
        return DataFormat.preference
    if {"prompt", "completion", "label"} <= keys:
        return DataFormat.rated
    if {"prompt", "completion"} <= keys:
        return DataFormat.prompt_completion
    if {"text", "label"} <= keys:
        return DataFormat.classification
    if "text" in keys:
        return DataFormat.text
    raise DataError(
        [
            DataProblem(
                location,
                f"cannot tell the example form from keys {sorted(keys)}; expected 'messages', 'conversations', "
                "'instruction'+'output', 'prompt'+'completion', 'prompt'+'chosen'+'rejected', 'prompt'+'completion'"
                "+'label', 'input'+'preferred_output'+'non_preferred_output', 'text'+'label' or 'text' (rename "
                "columns with --map, or pass --format)",
            )
        ]
    )


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


def _parse_classification(row: Any, default_instruction: str) -> tuple[list[Message], str]:
    row = _require_object(row)
    text, label = _text(row, "text"), row.get("label")
    if label is None:
        raise ValueError("missing field 'label'")
    if isinstance(label, bool) or not isinstance(label, str | int):
        raise ValueError(f"field 'label' must be a string or an integer, got {type(label).__name__}")
    label = str(label)
    if not label.strip():
        raise ValueError("field 'label' is empty")
    instruction = _text(row, "instruction", required=False) or default_instruction
    user = f"{instruction}\n\n{text}"
    return [{"role": "user", "content": user}, {"role": "assistant", "content": label}], label


def _parse_preference(row: Any, location: str) -> PreferenceExample:
    """`prompt`/`chosen`/`rejected` as strings or message lists (a chosen/rejected pair of whole
    conversations shares its prompt), or OpenAI's `input`/`preferred_output`/`non_preferred_output`."""
    row = _require_object(row)
    if "preferred_output" in row:
        prompt = _prompt(_require_object(row.get("input", {})).get("messages"), "input.messages")
        chosen = _answer(row.get("preferred_output"), "preferred_output")
        rejected = _answer(row.get("non_preferred_output"), "non_preferred_output")
    elif "prompt" in row:
        prompt = _prompt(row.get("prompt"), "prompt")
        chosen, rejected = _answer(row.get("chosen"), "chosen"), _answer(row.get("rejected"), "rejected")
    else:  # whole conversations: the prompt is what both say before their last (assistant) turn
        chosen_turns = _messages(row.get("chosen"), "chosen")
        rejected_turns = _messages(row.get("rejected"), "rejected")
        if chosen_turns[:-1] != rejected_turns[:-1]:
            raise ValueError("chosen and rejected conversations differ before their last turn")
        prompt = _prompt(chosen_turns[:-1], "chosen")
        chosen, rejected = _answer(chosen_turns, "chosen"), _answer(rejected_turns, "rejected")
    if chosen.strip() == rejected.strip():
        raise ValueError("chosen and rejected are the same answer: the pair prefers nothing")
    return PreferenceExample(prompt=prompt, chosen=chosen, rejected=rejected, source=location)


def _parse_rated(row: Any, location: str) -> RatedCompletion:
    row = _require_object(row)
    label = row.get("label")
    if not isinstance(label, bool):
        raise ValueError(f"field 'label' must be true (a good answer) or false (a bad one), got {label!r}")
    return RatedCompletion(
        _prompt(row.get("prompt"), "prompt"), _answer(row.get("completion"), "completion"), label, location
    )


def _prompt(value: Any, key: str) -> list[Message]:
    """A prompt as a string (one user turn) or a message list that ends with a user turn."""
    if isinstance(value, str) or value is None:
        return [{"role": "user", "content": _text({key: value}, key)}]
    messages = _messages(value, key) if value != [] else []
    if not any(message["role"] == "user" for message in messages):
        raise ValueError(f"{key} has no user turn: nothing asks for the answers")
    if messages[-1]["role"] != "user":
        raise ValueError(f"{key} ends with a {messages[-1]['role']} turn; it must end with the user's turn")
    return messages


def _answer(value: Any, key: str) -> str:
    """An answer as a string, or a message list whose last turn is the assistant's answer."""
    if isinstance(value, str) or value is None:
        return _text({key: value}, key)
    messages = _messages(value, key)
    if messages[-1]["role"] != "assistant":
        raise ValueError(f"{key} must end with an assistant turn, not a {messages[-1]['role']} turn")
    return messages[-1]["content"]


def _messages(value: Any, key: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field '{key}' must be a non-empty string or list of messages")
    messages: list[Message] = []
    for index, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise ValueError(f"{key}[{index}] must be an object with 'role' and 'content'")
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise ValueError(f"{key}[{index}].role is {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"{key}[{index}].content must be a non-empty string")
        messages.append({"role": role, "content": content})
    return messages


_PARSERS: dict[DataFormat, Callable[[Any], list[Message]]] = {
    DataFormat.alpaca: _parse_alpaca,
    DataFormat.chat: _parse_chat,
    DataFormat.sharegpt: _parse_sharegpt,
    DataFormat.prompt_completion: _parse_prompt_completion,
}
