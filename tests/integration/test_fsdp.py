"""Two processes sharding a full fine-tune (FSDP2 over gloo, through `tunesmith train --nproc 2`) train the
weights one process trains, save a plain model folder, and a stopped two-process run resumes to the
uninterrupted one.

Each process's share of a step is one whole micro-batch (batch 2, grad_accum 2). Unlike ddp's explicit
all-reduce, FSDP sums gradients with a reduce-scatter and clips by a norm summed over shards, so the
weights agree to rounding, not bitwise: the bound is 1e-5. As in `test_distributed.py`, the stop is made
by cutting a finished run's folder back to a checkpoint. fp32, as the bound is stated for it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import DEMO
from tests.integration.test_distributed import _launch, _max_difference
from tunesmith.config import TrainSpec
from tunesmith.train.sft import train_sft

STEPS = 6
SETTINGS: dict[str, Any] = {
    "tuning": "full", "max_steps": STEPS, "batch_size": 2, "grad_accum": 2, "lr": 1e-3, "save_every": 3,
    "eval_every": 3, "seed": 7, "precision": "fp32",
}  # fmt: skip


def _model(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def sharded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """An uninterrupted `--nproc 2` full fine-tune (auto: fsdp): its folder and summary."""
    folder = tmp_path_factory.mktemp("fsdp")
    flags = [f"--{key.replace('_', '-')}={value}" for key, value in SETTINGS.items()]
    data = [
        "--model",
        str(tiny_model_dir),
        "--data",
        str(DEMO / "train.jsonl"),
        "--val-data",
        str(DEMO / "val.jsonl"),
    ]
    summary = _launch([*data, *flags, "--out", str(folder / "run")], folder / "home")
    return folder / "run", summary


def test_two_sharded_processes_train_the_weights_one_process_trains(
    sharded: tuple[Path, dict[str, Any]], tiny_model_dir: Path, tmp_path: Path
) -> None:
    run, summary = sharded
    spec = TrainSpec(model=str(tiny_model_dir), data=DEMO / "train.jsonl", val_data=DEMO / "val.jsonl",
                     out=tmp_path / "one", **SETTINGS)  # fmt: skip
    one = train_sft(spec, progress=False)

    two_weights, one_weights = _model(run), _model(tmp_path / "one")
    assert _max_difference(two_weights, one_weights) <= 1e-5
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert _max_difference(two_weights, original) > 1e-3  # every weight trained, not the base saved back
    assert summary["steps"] == one.steps == STEPS
    assert summary["trained_tokens"] == one.trained_tokens
    assert summary["train_loss"] == pytest.approx(one.train_loss, abs=1e-5)
    assert (run / "model" / "config.json").is_file() and (run / "model" / "tokenizer.json").is_file()
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert "2 processes (cpu, fsdp)" in next(e["message"] for e in events if e["type"] == "running")


def test_a_stopped_sharded_run_resumes_to_the_uninterrupted_one(
    sharded: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    run, summary = sharded
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    for later in ["model", "run.json", *(f"checkpoints/{p.name}" for p in (run / "checkpoints").iterdir())]:
        if later == "checkpoints/step-00000003":
            continue
        target = stopped / later
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    resumed = _launch(["--resume", str(stopped)], tmp_path / "home")
    assert resumed["steps"] == STEPS and resumed["trained_tokens"] == summary["trained_tokens"]
    assert _max_difference(_model(stopped), _model(run)) <= 1e-6
