"""One client's round: continue the global adapter on the client's own data with tunesmith's training core.

Owns: writing the received global adapter as a peft folder for this machine's copy of the base model,
training it for the round's local steps with `train_sft` (the one training loop: `init_adapter` is the
global adapter), and reading back the trained adapter's tensors with the counts the server weights them
by. Does not own: the transport (`tunesmith.federated.apps`) or aggregation. Nothing of the data leaves
this module but the adapter's tensors, the example count, the loss and the data's content hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from tunesmith.config import LoraSpec, TrainSpec
from tunesmith.federated.aggregate import Arrays
from tunesmith.models.loading import resolve_model
from tunesmith.train.rundir import atomic_write_text

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class LocalTraining:
    """What the server asks of a client for one round (sent in the round's config record)."""

    model: str
    round: int
    local_steps: int
    batch_size: int
    lr: float
    max_seq_len: int
    pack_len: int
    seed: int


@dataclass(frozen=True)
class ClientUpdate:
    """A client's reply: the trained adapter and what the server may know of the round."""

    arrays: Arrays
    examples: int
    train_loss: float
    steps: int
    trained_tokens: int
    data_hash: str


def write_adapter(arrays: Arrays, adapter_config: dict[str, Any], directory: Path) -> None:
    """A peft adapter folder (weights and config) from tensors; the config names `base_model_name_or_path`."""
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {key: np.ascontiguousarray(value) for key, value in arrays.items()}, str(directory / ADAPTER_WEIGHTS)
    )
    atomic_write_text(directory / ADAPTER_CONFIG, json.dumps(adapter_config, indent=2, sort_keys=True))


def read_adapter(directory: Path) -> tuple[Arrays, dict[str, Any]]:
    """The tensors and config of a saved peft adapter folder."""
    config = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    return dict(load_file(str(directory / ADAPTER_WEIGHTS))), config


def train_local_round(
    global_arrays: Arrays, adapter_config: dict[str, Any], training: LocalTraining, data: Path, work: Path
) -> ClientUpdate:
    """Train the global adapter for `training.local_steps` steps on `data`; the run folder is under `work`."""
    from tunesmith.train.sft import train_sft

    round_dir = work / f"round-{training.round:03d}"
    model_path = resolve_model(training.model)
    start = round_dir / "global"
    write_adapter(global_arrays, {**adapter_config, "base_model_name_or_path": model_path}, start)
    spec = TrainSpec(
        model=training.model, data=data, init_adapter=start, hold_out_val=False,
        max_steps=training.local_steps, batch_size=training.batch_size, lr=training.lr,
        max_seq_len=training.max_seq_len, pack_len=training.pack_len, seed=training.seed + training.round,
        lora=LoraSpec(r=int(adapter_config["r"]), alpha=max(1, round(float(adapter_config["lora_alpha"])))),
        warmup_ratio=0.0, early_stopping_patience=None, out=round_dir / "run",
    )  # fmt: skip
    result = train_sft(spec, progress=False)
    assert result.artifact_dir is not None  # a LoRA run always saves its adapter
    trained, _ = read_adapter(Path(result.artifact_dir))
    return ClientUpdate(
        arrays={
            key: trained[key] for key in global_arrays
        },  # the order sent: Flower's clipping mod pairs them
        examples=result.num_examples,
        train_loss=float(result.train_loss) if result.train_loss is not None else float("nan"),
        steps=result.steps,
        trained_tokens=result.trained_tokens,
        data_hash=result.data_hash,
    )
