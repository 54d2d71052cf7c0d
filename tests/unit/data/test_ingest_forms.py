from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_jsonl
from tunesmith.config import DataFormat
from tunesmith.data.ingest import DEFAULT_INSTRUCTION, load_examples, load_records, load_split
from tunesmith.data.records import DataError, Document, PreferenceExample


def test_classification_rows_become_chat_with_the_label_as_answer(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl", [{"text": "I love it", "label": "pos"}, {"text": "meh", "label": 3}]
    )
    examples = load_examples(path)
    assert examples[0].messages == [
        {"role": "user", "content": f"{DEFAULT_INSTRUCTION}\n\nI love it"},
        {"role": "assistant", "content": "pos"},
    ]
    assert [example.label for example in examples] == ["pos", "3"]
    custom = load_examples(path, instruction="Sentiment?")
    assert custom[0].messages[0]["content"] == "Sentiment?\n\nI love it"


def test_classification_rows_without_a_label_are_reported(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": ""}])
    with pytest.raises(DataError, match=r"c.jsonl:2: field 'label' is empty"):
        load_examples(path, DataFormat.classification)


def test_preference_pairs_load_as_records_but_not_as_chat_examples(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}])
    prompt = [{"role": "user", "content": "Hi"}]
    assert load_records(path) == [PreferenceExample(prompt, "Hello!", "Go away.", "p.jsonl:1")]
    with pytest.raises(DataError, match="preference pairs"):
        load_examples(path)


def test_column_map_renames_and_reports_missing_columns(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "q.jsonl", [{"question": "1+1?", "answer": "2"}, {"question": "x"}])
    with pytest.raises(DataError, match=r"q.jsonl:2: missing column 'answer' \(mapped to 'output'\)"):
        load_records(path, column_map={"instruction": "question", "output": "answer"})


def test_saved_hf_dataset_and_document_folders_are_read(tmp_path: Path) -> None:
    import datasets

    datasets.Dataset.from_list([{"prompt": "Hi", "completion": "Hello!"}]).save_to_disk(str(tmp_path / "hf"))
    [example] = load_examples(tmp_path / "hf")
    assert example.messages[1]["content"] == "Hello!" and example.source == "hf row 1"
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    rows = [{"text": "great", "label": 1}, {"text": "awful", "label": 0}]
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(tmp_path / "sentiment"))
    assert [example.label for example in load_examples(tmp_path / "sentiment")] == ["pos", "neg"]
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "a.md").write_text("# Title\nBody", encoding="utf-8")
    (docs / "sub" / "b.txt").write_text("Plain", encoding="utf-8")
    (docs / "skip.bin").write_bytes(b"\x00")
    assert load_records(docs) == [Document("# Title\nBody", "docs/a.md"), Document("Plain", "docs/sub/b.txt")]


def test_load_split_reads_a_prepared_folder_or_a_plain_file(tmp_path: Path) -> None:
    chat = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    plain = write_jsonl(tmp_path / "plain.jsonl", [chat])
    assert load_split(plain, "train") == (load_examples(plain), None)
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    write_jsonl(prepared / "val.jsonl", [chat, chat])
    (prepared / "dataset.json").write_text(json.dumps({"hash": "abc"}), encoding="utf-8")
    examples, digest = load_split(prepared, "val")
    assert len(examples) == 2 and digest == "abc"
    with pytest.raises(FileNotFoundError, match="no 'test' split"):
        load_split(prepared, "test")


def test_references_are_kept_in_every_chat_form_and_file_type(tmp_path: Path) -> None:
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    references = ["Open at eight.", "We open at 8 am."]
    rows = {
        "alpaca.jsonl": {"instruction": "When do you open?", "output": "At 8.", "references": references},
        "prompt.json": {"prompt": "When do you open?", "completion": "At 8.", "references": references},
        "sharegpt.parquet": {
            "conversations": [
                {"from": "human", "value": "When do you open?"},
                {"from": "gpt", "value": "At 8."},
            ],
            "references": references,
        },
        "chat.csv": {
            "messages": json.dumps(
                [{"role": "user", "content": "When do you open?"}, {"role": "assistant", "content": "At 8."}]
            ),
            "references": json.dumps(references),
        },
    }
    for name, row in rows.items():
        path = tmp_path / name
        if name.endswith(".jsonl"):
            write_jsonl(path, [row])
        elif name.endswith(".json"):
            path.write_text(json.dumps([row]), encoding="utf-8")
        elif name.endswith(".parquet"):
            pq.write_table(pa.Table.from_pylist([row]), path)
        else:
            with path.open("w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(row))
                writer.writeheader()
                writer.writerow(row)
        (example,) = load_examples(path)
        assert example.references == tuple(references), name
        assert example.all_references() == ["At 8.", *references], name
    # the answer listed among the references again is scored once
    (again,) = load_examples(
        write_jsonl(tmp_path / "again.jsonl", [{"prompt": "q", "completion": "a", "references": ["a", "b"]}])
    )
    assert again.all_references() == ["a", "b"]


def test_references_that_are_not_a_list_of_texts_are_reported(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"prompt": "q", "completion": "a", "references": "b"},
            {"prompt": "q", "completion": "a", "references": [""]},
        ],
    )
    with pytest.raises(DataError, match=r"r.jsonl:1: field 'references' must be a list") as caught:
        load_examples(path)
    assert "r.jsonl:2" in str(caught.value)
