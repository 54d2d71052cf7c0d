from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tunesmith.config import PrepareSpec
from tunesmith.data.ingest import load_split
from tunesmith.data.output import inspect_dataset
from tunesmith.data.prepare import prepare_data
from tunesmith.data.records import DataError
from tunesmith.registry.store import Registry

WORDS = ["apple", "river", "stone", "cloud", "lamp", "tiger", "violet", "pencil", "window", "garden", "ocean"]


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) + str(rng.randrange(100)) for _ in range(count))


def _chat(user: str, assistant: str, **extra: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
        **extra,
    }


def _distinct_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [_chat(_words(rng, 12), _words(rng, 30)) for _ in range(count)]


def _spec(tmp_path: Path, tiny_model_dir: Path, inputs: list[Path], **fields: Any) -> PrepareSpec:
    return PrepareSpec.model_validate(
        {
            "inputs": inputs,
            "out": tmp_path / "out",
            "model": str(tiny_model_dir),
            "calibrate": False,
            **fields,
        }
    )


def _split_rows(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        name: [json.loads(line) for line in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        for name in ("train", "val", "test")
    }


def test_duplicates_near_duplicates_and_pii_are_handled_and_reported(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    rows = _distinct_rows(40)
    near = rows[5]["messages"][1]["content"].split()
    near[10] = "changed"
    rows += [
        rows[3],  # exact duplicate
        _chat(
            rows[4]["messages"][0]["content"].upper() + "  ", rows[4]["messages"][1]["content"]
        ),  # same after normalising
        _chat(rows[5]["messages"][0]["content"], " ".join(near)),  # near-duplicate
        _chat(
            "Mail me at bob@example.com", "Sure, and call 555-201-3344 or pay GB82 WEST 1234 5698 7654 32."
        ),
        _chat("<p>Hello <b>there</b></p>", "cafÃ© is   open"),
    ]
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}").connect()
    result = prepare_data(
        _spec(tmp_path, tiny_model_dir, [write_jsonl(tmp_path / "d.jsonl", rows)]), registry=registry
    )
    steps = {step["name"]: step for step in result.report["steps"]}
    assert [s["source"] for s in steps["exact_dedup"]["removed"]] == ["d.jsonl:41", "d.jsonl:42"]
    assert steps["exact_dedup"]["removed"][0]["reason"] == "exact duplicate of d.jsonl:4"
    assert [s["source"] for s in steps["near_dedup"]["removed"]] == ["d.jsonl:43"]
    assert result.report["clusters"][0]["kept"] == "d.jsonl:6"
    assert steps["pii"]["details"]["found"] == {
        "EMAIL": 1,
        "PHONE": 1,
        "CARD": 0,
        "IBAN": 1,
        "IP": 0,
        "SSN": 0,
    }
    written = json.dumps(_split_rows(result.out), ensure_ascii=False)
    assert "[EMAIL]" in written and "[IBAN]" in written and "bob@example.com" not in written
    assert "Hello there" in written and "café is open" in written
    assert sum(result.splits.values()) == 42
    assert registry.get_dataset(result.hash)["lineage"]["steps"][3]["rows_out"] == 43  # type: ignore[index]


def test_pii_drop_removes_rows_and_report_only_counts(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [*_distinct_rows(10), _chat("my ssn is 123-45-6789", "noted")]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    dropped = prepare_data(_spec(tmp_path, tiny_model_dir, [data], pii="drop"))
    assert dropped.report["steps"][2]["removed"] == [
        {"source": "d.jsonl:11", "reason": "contains personal data: SSN", "kind": "personal data"}
    ]
    kept = prepare_data(_spec(tmp_path, tiny_model_dir, [data], pii="report"))
    assert "123-45-6789" in json.dumps(_split_rows(kept.out))


BAD_ROWS = [
    b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}',
    b'{"messages": [{"role": "user", "content": "Hi"}',  # malformed JSON
    b'{"messages": "not a list"}',  # wrong type
    b'{"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "x"}]}',  # empty
    b'{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]}',  # order
    b'{"messages": [{"role": "user", "content": "only a question"}]}',  # no assistant turn
    b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "x"}]}',  # latin-1
    b'{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}',  # missing field
]
EXPECTED_PROBLEMS = [
    ("d.jsonl:2", "malformed JSON"),
    ("d.jsonl:3", "field 'messages' must be a non-empty list"),
    ("d.jsonl:4", "messages[0].content must be a non-empty string"),
    ("d.jsonl:5", "messages[0] is a assistant turn where a user turn belongs"),
    ("d.jsonl:6", "messages has no assistant turn at the end"),
    ("d.jsonl:7", "invalid UTF-8"),
    ("d.jsonl:8", "messages[0].content must be a non-empty string"),
]


def test_every_malformed_row_kind_fails_with_its_line_or_is_skipped_and_listed(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_bytes(b"\n".join(BAD_ROWS) + b"\n")
    with pytest.raises(DataError) as failure:
        prepare_data(_spec(tmp_path, tiny_model_dir, [data]))
    assert failure.value.total == len(EXPECTED_PROBLEMS)
    for (location, message), problem in zip(EXPECTED_PROBLEMS, failure.value.problems, strict=True):
        assert problem.location == location and message in problem.message
    assert not (tmp_path / "out").exists()
    result = prepare_data(_spec(tmp_path, tiny_model_dir, [data], on_error="skip", split=(1, 0, 0)))
    removed = result.report["steps"][0]["removed"]
    assert [
        (r["source"], message in r["reason"])
        for r, (_, message) in zip(removed, EXPECTED_PROBLEMS, strict=True)
    ] == [(location, True) for location, _ in EXPECTED_PROBLEMS]
    assert result.splits == {"train": 1, "val": 0, "test": 0}


def test_leaking_prompts_leave_val_and_test(tmp_path: Path, tiny_model_dir: Path) -> None:
    rng = random.Random(1)
    question = "How do I reset the thermostat in the north wing of the building?"
    rows = _distinct_rows(40) + [_chat(question, _words(rng, 30)) for _ in range(12)]
    result = prepare_data(_spec(tmp_path, tiny_model_dir, [write_jsonl(tmp_path / "d.jsonl", rows)]))
    leakage = result.report["steps"][-1]
    assert (
        leakage["name"] == "leakage"
        and leakage["rows_in"] - leakage["rows_out"] == len(result.report["leaks"]) > 0
    )
    splits = _split_rows(result.out)
    in_train = any(row["messages"][0]["content"] == question for row in splits["train"])
    held_out = [
        row for name in ("val", "test") for row in splits[name] if row["messages"][0]["content"] == question
    ]
    assert in_train and held_out == []


def test_groups_never_straddle_splits(tmp_path: Path, tiny_model_dir: Path) -> None:
    rows = [{**row, "conversation_id": f"c{i // 3}"} for i, row in enumerate(_distinct_rows(60))]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = prepare_data(_spec(tmp_path, tiny_model_dir, [data], group_by="conversation_id"))
    assert result.report["steps"][-2]["params"]["group_by"] == "conversation_id"
    lines = {json.dumps(row["messages"], sort_keys=True): row["conversation_id"] for row in rows}
    split_of: dict[str, set[str]] = {}
    for name, written in _split_rows(result.out).items():
        for row in written:
            split_of.setdefault(lines[json.dumps(row["messages"], sort_keys=True)], set()).add(name)
    assert all(len(splits) == 1 for splits in split_of.values()) and len(split_of) == 20
    with pytest.raises(DataError, match="missing group key 'session'"):
        prepare_data(_spec(tmp_path, tiny_model_dir, [data], group_by="session"))


def test_classification_is_stratified_and_written_as_text_and_label(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    rng = random.Random(2)
    rows = [{"text": _words(rng, 8), "label": "yes" if i % 4 else "no"} for i in range(80)]
    spec = _spec(
        tmp_path, tiny_model_dir, [write_jsonl(tmp_path / "c.jsonl", rows)], instruction="Yes or no?"
    )
    result = prepare_data(spec)
    labels = result.report["labels"]
    assert labels == {"yes": {"train": 42, "val": 9, "test": 9}, "no": {"train": 14, "val": 3, "test": 3}}
    first = _split_rows(result.out)["test"][0]
    assert set(first) == {"text", "label", "instruction"} and first["instruction"] == "Yes or no?"
    examples, digest = load_split(result.out, "test")
    assert digest == result.hash and examples[0].label == first["label"]
    assert examples[0].messages[0]["content"] == f"Yes or no?\n\n{first['text']}"


def test_output_is_deterministic_versioned_and_replaced_atomically(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", _distinct_rows(30))
    first = prepare_data(_spec(tmp_path, tiny_model_dir, [data]))
    manifest = json.loads((first.out / "dataset.json").read_text(encoding="utf-8"))
    assert manifest["hash"] == first.hash and manifest["lineage"]["inputs"][0]["rows"] == 30
    assert manifest["splits"]["train"]["rows"] == first.splits["train"]
    again = prepare_data(_spec(tmp_path, tiny_model_dir, [data]))
    assert again.hash == first.hash
    median = int(first.report["tokens"]["p50"])
    shorter = prepare_data(_spec(tmp_path, tiny_model_dir, [data], max_tokens=median, seed=1))
    assert shorter.hash != first.hash
    length = shorter.report["steps"][5]
    assert length["name"] == "length" and 5 <= len(length["removed"]) <= 15
    assert all(f"> max {median}" in r["reason"] for r in length["removed"])
    with pytest.raises(DataError, match="no examples left after length"):
        prepare_data(_spec(tmp_path, tiny_model_dir, [data], min_tokens=10_000))
    assert sorted(p.name for p in first.out.iterdir()) == [
        "dataset.json", "report.html", "report.json", "test.jsonl", "train.jsonl", "val.jsonl"
    ]  # fmt: skip
    html = (first.out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") >= 3 and "http://" not in html and "https://" not in html
    summary = inspect_dataset(first.out)
    assert summary["hash"] == shorter.hash and summary["tokens"]["context_length"] == 1024
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(ValueError, match="not a prepared dataset"):
        prepare_data(
            PrepareSpec(inputs=[data], out=tmp_path / "mine", model=str(tiny_model_dir), calibrate=False)
        )


def test_estimate_uses_registry_runs_or_calibrates(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", _distinct_rows(20))
    calibrated = prepare_data(_spec(tmp_path, tiny_model_dir, [data], calibrate=True, epochs=2))
    estimate = calibrated.report["estimate"]
    assert estimate["cpu_tokens_per_second"] > 0 and estimate["cpu_throughput_source"].startswith(
        "calibration"
    )
    train_tokens = estimate["train_tokens"]
    assert estimate["total_tokens"] == 2 * train_tokens
    assert estimate["cpu_minutes"] == pytest.approx(2 * train_tokens / estimate["cpu_tokens_per_second"] / 60)
    h100 = estimate["gpus"][0]
    assert h100["dollars"] == pytest.approx(h100["hours"] * h100["price_per_hour"])

    class Runs:
        def record_dataset(self, *args: Any) -> None: ...

        def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
            run = {"status": "succeeded", "base_model": str(tiny_model_dir), "method": "lora"}
            speeds = [{"tokens_per_second": speed} for speed in (100.0, 300.0, 200.0)]
            gpu = {"tokens_per_second": 9000.0, "device": "cuda"}  # another machine's speed: not "here"
            return [{**run, "metrics": metrics} for metrics in [*speeds, gpu]]

    measured = prepare_data(_spec(tmp_path, tiny_model_dir, [data]), registry=Runs())
    assert measured.report["estimate"]["cpu_tokens_per_second"] == 200.0


def test_boilerplate_leaves_answers_but_not_repeated_prompts(tmp_path: Path, tiny_model_dir: Path) -> None:
    footer = "Sent from my phone, please excuse the typos."
    prompt = "Summarise the following support ticket in one line."
    rows = [_chat(f"{prompt}\n{row['messages'][0]['content']}", f"{row['messages'][1]['content']}\n{footer}")
            for row in _distinct_rows(20)]  # fmt: skip
    result = prepare_data(_spec(tmp_path, tiny_model_dir, [write_jsonl(tmp_path / "d.jsonl", rows)]))
    clean_step = result.report["steps"][1]
    assert clean_step["details"]["boilerplate_lines"] == [footer]
    assert clean_step["changed"]["removed_boilerplate"] == 20
    written = json.dumps(_split_rows(result.out))
    assert footer not in written and written.count(prompt) == 20


def test_preference_pairs_and_documents_keep_their_form(tmp_path: Path, tiny_model_dir: Path) -> None:
    rng = random.Random(3)
    pairs = [
        {"prompt": _words(rng, 10), "chosen": _words(rng, 20), "rejected": _words(rng, 20)} for _ in range(20)
    ]
    result = prepare_data(_spec(tmp_path, tiny_model_dir, [write_jsonl(tmp_path / "p.jsonl", pairs)]))
    assert result.report["kind"] == "preference"
    assert all(
        set(row) == {"prompt", "chosen", "rejected"}
        for rows in _split_rows(result.out).values()
        for row in rows
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    for index in range(12):
        (docs / f"page{index}.md").write_text(f"# Page {index}\n\n{_words(rng, 40)}\n", encoding="utf-8")
    result = prepare_data(_spec(tmp_path, tiny_model_dir, [docs]))
    written = _split_rows(result.out)
    assert result.report["kind"] == "text" and sum(len(rows) for rows in written.values()) == 12
    assert result.report["tokens"]["loss_share"] == 1.0 and written["train"][0]["text"].startswith("# Page")
    with pytest.raises(DataError, match="a chat row among preference rows"):
        prepare_data(
            _spec(
                tmp_path,
                tiny_model_dir,
                [tmp_path / "p.jsonl", write_jsonl(tmp_path / "c.jsonl", _distinct_rows(2))],
            )
        )


def test_references_are_cleaned_redacted_and_written_with_their_row(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    rows = [
        _chat(
            row["messages"][0]["content"],
            row["messages"][1]["content"],
            references=[f"<b>ref {i}</b>", "b@x.io"],
        )
        for i, row in enumerate(_distinct_rows(20))
    ]
    result = prepare_data(_spec(tmp_path, tiny_model_dir, [write_jsonl(tmp_path / "d.jsonl", rows)]))
    written = [row for split in _split_rows(result.out).values() for row in split]
    assert len(written) == 20
    assert sorted(row["references"][0] for row in written) == sorted(f"ref {i}" for i in range(20))
    assert all(row["references"][1] == "[EMAIL]" for row in written)
    examples, _ = load_split(result.out, "test")
    assert examples and all(len(example.all_references()) == 3 for example in examples)
