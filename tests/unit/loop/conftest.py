"""A registry with a champion serving a deployment, as the registry records one, without a model; and the
serve tests' adapters on the tiny model, for the gate's bias audit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_jsonl
from tests.unit.serve.conftest import adapter_dirs  # noqa: F401  (a fixture the bias gate test uses)
from tunesmith.config import default_database_url
from tunesmith.loop.policy import LoopPolicySpec
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry


def chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    """A champion voice@1 trained (as the registry records it) on a file, serving deployment support."""
    registry = Registry(default_database_url()).connect()
    data = write_jsonl(
        tmp_path / "train.jsonl", [chat(f"question {n}", "we open at eight") for n in range(8)]
    )
    config = {"model": "tiny", "data": str(data), "max_steps": 2}
    registry.record_event(
        "run-1", "created", "created", {"config": config, "run_dir": str(tmp_path)}, "2026-12-07"
    )
    store = ServingStore(registry)
    store.register_adapter("voice", tmp_path / "adapter", "tiny", tenant="acme", run_id="run-1")
    store.create_deployment("support", [{"model": "voice@1", "weight": 100}], tenant="acme")
    return registry


def policy_for(tmp_path: Path, **gate: Any) -> LoopPolicySpec:
    frozen = write_jsonl(
        tmp_path / "frozen.jsonl", [chat(f"asking {n}", "we open at eight") for n in range(4)]
    )
    return LoopPolicySpec.model_validate({"gate": {"metric": "rouge_l", "frozen_test": str(frozen), **gate}})
