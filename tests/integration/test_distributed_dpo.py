"""DPO in two processes (ddp, gloo on CPU, through `tunesmith train --method dpo --nproc 2`) trains the
adapter one process trains.

Each step holds 2 pairs, and every pair is a pass of its own (pack_len and micro_batch_tokens 16: passes
of the longest sequence): one process runs the passes one after the other, two processes one each, so the
summed gradient is bitwise the same, as in `test_distributed.py`. (With 2 pairs per process packed into one
pass where one process packed 4, the rounding differed: after 6 steps the adapters differed by 4e-5.) The
reference log-probabilities are scored once, by process 0, and sent to the other. fp32 and dropout 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file

from tests.integration.test_distributed import _launch, _max_difference
from tests.unit.train.test_preference import _pairs
from tunesmith.config import TrainSpec
from tunesmith.train.dpo import train_dpo

SETTINGS: dict[str, Any] = {
    "method": "dpo", "max_steps": 6, "batch_size": 2, "grad_accum": 1, "pack_len": 16,
    "micro_batch_tokens": 16, "lr": 5e-3, "save_every": 100, "eval_every": 3, "seed": 7, "precision": "fp32",
}  # fmt: skip


def test_two_processes_train_the_dpo_adapter_one_process_trains(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = _pairs(tmp_path / "pairs.jsonl")
    spec = TrainSpec(model=str(tiny_model_dir), data=pairs, val_data=pairs, out=tmp_path / "one",
                     lora={"dropout": 0.0}, **SETTINGS)  # fmt: skip
    config = tmp_path / "train.yaml"  # pack_len has no flag: the spec as a config
    two_spec = spec.model_copy(update={"out": tmp_path / "two"})
    config.write_text(yaml.safe_dump({"train": two_spec.model_dump(mode="json")}), encoding="utf-8")
    two = _launch(["--config", str(config)], tmp_path / "home")
    one = train_dpo(spec, progress=False)

    adapter = "adapter/adapter_model.safetensors"
    difference = _max_difference(
        load_file(str(tmp_path / "two" / adapter)), load_file(str(tmp_path / "one" / adapter))
    )
    assert difference <= 1e-5
    assert two["steps"] == one.steps == 6 and two["trained_tokens"] == one.trained_tokens
    assert two["train_loss"] < 0.6931  # trained: below log 2, the loss where the policy is the reference
    events = [json.loads(line) for line in (tmp_path / "two" / "events.jsonl").read_text().splitlines()]
    assert "2 processes (cpu, ddp)" in next(e["message"] for e in events if e["type"] == "running")
