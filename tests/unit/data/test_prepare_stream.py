"""The streaming preparation finds exactly what the in-memory one finds: same rows, splits and report."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tunesmith.config import PrepareSpec
from tunesmith.data import prepare_stream
from tunesmith.data.lengths import TokenCounter
from tunesmith.data.prepare import prepare_data_in_memory
from tunesmith.data.prepare_stream import prepare_data_streaming

_GENERATOR = Path(__file__).parents[3] / "benchmarks" / "synthetic_chat.py"


def _synthetic(rows: int) -> list[dict[str, Any]]:
    """The benchmark's dirty synthetic chats (duplicates, near-duplicates, PII, HTML, boilerplate, leaks)."""
    module_spec = importlib.util.spec_from_file_location("synthetic_chat", _GENERATOR)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return list(module.generate(rows, seed=1))


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in report.items() if key != "seconds"}


@pytest.mark.parametrize(
    "fields",
    [
        {"num_proc": 2},  # the defaults (redact, exact and near dedup, boilerplate, leakage), 2 workers
        {
            "pii": "drop",
            "min_tokens": 560,
            "boilerplate_share": 0,
            "split": (0.6, 0.2, 0.2),
            "seed": 3,
            "num_proc": 1,
        },
    ],
)
def test_streaming_output_equals_in_memory(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any]
) -> None:
    data = tmp_path / "chat.jsonl"
    write_jsonl(data, _synthetic(1000))
    base = {"inputs": [data], "model": str(tiny_model_dir), "calibrate": False, **fields}
    memory = prepare_data_in_memory(PrepareSpec.model_validate({**base, "out": tmp_path / "memory"}))
    monkeypatch.setattr(prepare_stream, "CHUNK", 128)  # many chunks: state carried across them
    streamed = prepare_data_streaming(PrepareSpec.model_validate({**base, "out": tmp_path / "streamed"}))

    assert streamed.hash == memory.hash
    assert streamed.splits == memory.splits
    assert _comparable(streamed.report) == _comparable(memory.report)
    removed = {step["name"]: step["rows_in"] - step["rows_out"] for step in memory.report["steps"]}
    assert removed["exact_dedup"] > 0 and removed["near_dedup"] > 0 and removed["leakage"] > 0
    if fields["num_proc"] == 1:
        assert removed["pii"] > 0 and removed["length"] > 0
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "report.json"):
        written = [
            json.loads(p.read_text(encoding="utf-8")) if p.suffix == ".json" else p.read_text()
            for p in (tmp_path / "memory" / name, tmp_path / "streamed" / name)
        ]
        if name == "report.json":
            written = [_comparable(report) for report in written]
        assert written[0] == written[1], name


def test_streaming_equals_in_memory_for_labels_and_groups(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stratified and grouped splits see the same labels and groups, in the same order."""
    chats = _synthetic(200)
    rows = [
        {
            "text": row["messages"][0]["content"],
            "label": ["billing", "refund", "other"][index % 3],
            "user": index % 37,
        }
        for index, row in enumerate(chats)
    ]
    data = tmp_path / "labels.jsonl"
    write_jsonl(data, rows)
    monkeypatch.setattr(prepare_stream, "CHUNK", 64)
    for fields in ({}, {"group_by": "user"}):
        base = {"inputs": [data], "model": str(tiny_model_dir), "calibrate": False, **fields}
        memory = prepare_data_in_memory(PrepareSpec.model_validate({**base, "out": tmp_path / "memory"}))
        streamed = prepare_data_streaming(PrepareSpec.model_validate({**base, "out": tmp_path / "streamed"}))
        assert streamed.hash == memory.hash
        assert _comparable(streamed.report) == _comparable(memory.report)
        assert memory.report["labels"]


def test_any_num_proc_writes_the_same_dataset(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers sign and count chunks; the parent decides in chunk order: 1 or 3 processes, same files."""
    data = tmp_path / "chat.jsonl"
    write_jsonl(data, _synthetic(600))
    monkeypatch.setattr(prepare_stream, "CHUNK", 50)  # more chunks than workers: results come back in order
    results = {}
    for num_proc in (1, 3):
        spec = {"inputs": [data], "model": str(tiny_model_dir), "calibrate": False, "num_proc": num_proc}
        results[num_proc] = prepare_data_streaming(
            PrepareSpec.model_validate({**spec, "out": tmp_path / str(num_proc)})
        )
    assert results[1].hash == results[3].hash
    assert _comparable(results[1].report) == _comparable(results[3].report)
    for name in ("train.jsonl", "val.jsonl", "test.jsonl"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "3" / name).read_bytes()
    assert results[1].report["clusters"] and results[1].report["leaks"]


_TRICKY = [
    "",
    " ",
    "plain words, one space apart.",
    "  two leading spaces",
    "trailing space ",
    "double  space, triple   space, and a tab\t here",
    "a line \n then a space before it, and \n  after, indented\n    four",
    "it's, don't 've 're 'll 'd can't ' s",
    "naïve café über straße 東京 😀 ok",
    "no\u00a0break space and a\u2003 wide one",
    "<|im_start|>user special tokens <|im_end|> inside",
    "numbers 12345 678 90.5 and -3 x=y+1 (brackets) [x] {y}",
    "ctrl\x0b vertical tab \x1f unit separator \x7f del",
    "  \n\n  ",
]


def test_token_counter_counts_what_the_tokenizer_counts() -> None:
    """Counting piece by piece (cached) gives the whole text's count, on tricky spacing and scripts, with
    a byte-level BPE that has merged runs of spaces (as real ones do: where a cut would change counts)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = _TRICKY + [m["content"] for row in _synthetic(200) for m in row["messages"]]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(texts + ["   x    y\n     z\t  \t   w"] * 5000, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert len(backend.encode("   ").ids) == 1  # a merged run of spaces
    counter = TokenCounter(tokenizer)
    assert counter.by_pieces
    expected = [len(backend.encode(text, add_special_tokens=False).ids) for text in texts]
    assert counter.count_texts(texts).tolist() == expected
    assert counter.count_texts(texts).tolist() == expected  # again, from the cache
