from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.config import ConfigError
from tunesmith.registry.store import Registry
from tunesmith.train.rundir import EventType, RunEvent


def _event(run_id: str, type_: EventType, message: str = "", **data) -> RunEvent:
    return RunEvent(run_id=run_id, type=type_, message=message, data=data)


def _succeed(listen, run_id: str, run_dir: Path, name: str | None = None) -> None:
    config = {"model": "base-x", "method": "lora", "data": "train.jsonl", "name": name}
    listen(_event(run_id, EventType.created, "created", config=config, run_dir=str(run_dir)))
    listen(_event(run_id, EventType.running, "running"))
    listen(_event(run_id, EventType.metrics, "m", step=3, train_loss=1.5, val_loss=1.7))
    listen(
        _event(
            run_id, EventType.succeeded, "done", trained_tokens=1234, wall_seconds=5.0, train_loss=1.2, val_loss=1.4,
            tokens_per_second=300.0, steps=6, data_hash="a" * 64, val_data_hash="b" * 64, num_examples=10, num_val_examples=4,
            artifact_dir=str(run_dir / "adapter"), device="cpu", precision="bf16", peak_memory_gb=2.5,
        )
    )  # fmt: skip


def test_events_build_a_run_with_lineage_and_a_versioned_adapter(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}").connect()
    listen = registry.run_listener("acme-voice")
    _succeed(listen, "run-1", tmp_path / "run-1")
    _succeed(listen, "run-2", tmp_path / "run-2")
    run = registry.get_run("run-2")
    assert run is not None
    assert run["status"] == "succeeded"
    assert run["trained_tokens"] == 1234 and run["metrics"]["val_loss"] == 1.4
    assert run["dataset_id"] == "a" * 64 and run["val_dataset_id"] == "b" * 64
    assert [e["type"] for e in run["events"]] == ["created", "running", "metrics", "succeeded"]
    assert run["adapters"] == [
        {"name": "acme-voice", "version": 2, "path": str(tmp_path / "run-2" / "adapter")}
    ]
    assert [r["id"] for r in registry.list_runs()] == ["run-2", "run-1"]


def test_failed_run_keeps_the_error(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}").connect()
    listen = registry.run_listener()
    listen(_event("run-9", EventType.created, "created", config={"model": "m"}, run_dir="/x"))
    listen(_event("run-9", EventType.failed, "DataError: 3 invalid row(s)"))
    run = registry.get_run("run-9")
    assert run is not None and run["status"] == "failed" and "3 invalid" in run["error"]


def test_run_lookup_by_prefix_and_unknown_run(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}").connect()
    run_dir = tmp_path / "run-abc"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("train: {}\n")
    _succeed(registry.run_listener(), "run-abc", run_dir)
    assert registry.get_run("run-a")["id"] == "run-abc"
    assert registry.find_run_dir("run-abc") == run_dir
    with pytest.raises(ConfigError, match="no such run"):
        registry.find_run_dir("run-zzz")


def test_evaluation_links_run_and_dataset(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}").connect()
    _succeed(registry.run_listener(), "run-1", tmp_path)
    report = {"data": {"hash": "c" * 64, "path": "test.jsonl", "examples": 4}, "models": [{"name": "base"}]}
    registry.record_evaluation("run-1", report, tmp_path / "eval")
    run = registry.get_run("run-1")
    assert run is not None and run["evaluations"][0]["models"] == [{"name": "base"}]


def test_measured_throughput_is_per_model_method_device_and_precision(tmp_path: Path) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'r.db'}").connect()
    listen = registry.run_listener()
    _succeed(listen, "run-1", tmp_path / "run-1")
    _succeed(listen, "run-2", tmp_path / "run-2")
    assert registry.measured_throughput("base-x", "lora", "cpu", "bf16") == [300.0, 300.0]
    assert registry.measured_throughput("base-x", "lora", "cuda", "bf16") == []
    assert registry.measured_throughput("base-x", "full", "cpu", "bf16") == []
    assert registry.measured_throughput("base-y", "lora", "cpu", "bf16") == []


def test_a_registry_from_an_older_version_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as old:  # the datasets table as the first release wrote it
        old.execute(
            "CREATE TABLE datasets (id VARCHAR(64) PRIMARY KEY, path TEXT, rows INTEGER, created_at DATETIME)"
        )
        old.execute("INSERT INTO datasets VALUES ('d1', 'train.jsonl', 3, '2026-11-23 18:00:00')")
    registry = Registry(f"sqlite:///{path}").connect()
    registry.record_dataset("d2", "prepared/", 10, {"steps": []})
    assert registry.get_dataset("d2")["lineage"] == {"steps": []}
    assert registry.get_dataset("d1")["rows"] == 3  # old rows survive, with no lineage
