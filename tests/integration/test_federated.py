"""Federated fine-tuning end to end on the tiny model: Flower's simulation (Ray) with three clients."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DEMO
from tunesmith.config import FederatedSpec, default_database_url
from tunesmith.registry.store import Registry


def test_simulation_records_each_round_and_the_final_adapter_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from tunesmith.federated.simulate import simulate
    from tunesmith.models.adapters import load_adapter

    spec = FederatedSpec.model_validate({
        "model": str(tiny_model_dir), "rounds": 2, "local_steps": 2, "batch_size": 4, "max_seq_len": 512,
        "pack_len": 512, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "partition": {"data": str(DEMO / "train.jsonl"), "clients": 3, "by": "iid", "seed": 1},
        "out": str(tmp_path / "fed"), "name": "fed-demo",
    })  # fmt: skip
    registry = Registry(default_database_url()).connect()

    result = simulate(spec, registry)

    assert [r.adapter for r in result.rounds] == ["fed-demo@1", "fed-demo@2"]
    assert all(len(r.clients) == 3 and r.traffic_bytes > 0 for r in result.rounds)
    second = registry.get_run(result.rounds[1].run_id)
    assert second is not None and second["config"]["previous_run"] == result.rounds[0].run_id
    summary = json.loads((tmp_path / "fed" / "round-002" / "round.json").read_text())
    assert summary["error"] <= summary["fedavg_error"]
    model = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), Path(result.final_adapter_dir))
    assert any("lora_A" in name for name, _ in model.named_parameters())
