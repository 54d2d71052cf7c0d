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
        {},  # the defaults: redact, exact and near dedup, boilerplate, leakage check
        {"pii": "drop", "min_tokens": 560, "boilerplate_share": 0, "split": (0.6, 0.2, 0.2), "seed": 3},
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
    if fields:
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
