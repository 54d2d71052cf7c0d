"""File and folder readers that keep each row's location. No validation of the example form.

Owns: turning JSONL, JSON, CSV, Parquet, saved Hugging Face `datasets` folders and folders of .txt/.md
documents into `(location, parsed row)` pairs, with a `DataProblem` in place of a row that cannot be
read (bad UTF-8, malformed JSON). Does not own: what a row means (see `ingest`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tunesmith.data.records import DataError, DataProblem, Document, Record

Row = tuple[str, Any]  # (location, parsed row or a DataProblem)
RecordRow = tuple[str, Any, Record | DataProblem]  # (location, raw row after mapping, record or problem)

DOCUMENT_SUFFIXES = (".txt", ".md")
_JSON_COLUMNS = ("messages", "conversations", "references")  # CSV cells that hold JSON lists


def read_rows(path: Path) -> Iterator[Row]:
    if path.is_dir():
        return _read_hf_dataset(path)
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
    import pyarrow.parquet as pq

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield f"{path.name} row {number}", {key: value for key, value in row.items() if value is not None}


def is_hf_dataset(path: Path) -> bool:
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()


def _read_hf_dataset(path: Path) -> Iterator[Row]:
    """A folder written by `datasets.Dataset.save_to_disk` (every split of a `DatasetDict`, in order)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    splits = loaded.items() if isinstance(loaded, datasets.DatasetDict) else [("", loaded)]
    for split, dataset in splits:
        prefix = f"{path.name}[{split}]" if split else path.name
        # ClassLabel columns hold integers; rows get the class names, which is what a model should say.
        names = {
            column: feature.names
            for column, feature in dataset.features.items()
            if isinstance(feature, datasets.ClassLabel)
        }
        number = 0
        for batch in dataset.iter(batch_size=1024):
            columns = list(batch)
            for values in zip(*(batch[column] for column in columns), strict=True):
                number += 1
                row = {key: value for key, value in zip(columns, values, strict=True) if value is not None}
                for column, labels in names.items():
                    if isinstance(row.get(column), int) and 0 <= row[column] < len(labels):
                        row[column] = labels[row[column]]
                yield f"{prefix} row {number}", row


def read_documents(path: Path) -> Iterator[RecordRow]:
    """A folder of .txt/.md files, one document each (for continued pretraining)."""
    files = sorted(file for file in path.rglob("*") if file.suffix.lower() in DOCUMENT_SUFFIXES)
    if not files:
        problem = DataProblem(
            str(path), "folder holds neither a saved `datasets` dataset nor .txt/.md documents"
        )
        yield str(path), None, problem
        return
    for file in files:
        location = str(file.relative_to(path.parent))
        try:
            text = file.read_bytes().decode("utf-8")
        except UnicodeDecodeError as error:
            yield location, None, DataProblem(location, f"invalid UTF-8 at byte {error.start}")
            continue
        if not text.strip():
            yield location, None, DataProblem(location, "document is empty")
            continue
        yield location, {"text": text}, Document(text=text, source=location)
