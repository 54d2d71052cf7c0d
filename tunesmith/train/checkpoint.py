"""Resumable checkpoints: exactly what is needed to continue a run bit-for-bit after a kill.

Owns: writing a checkpoint folder atomically (staged, then renamed), finding the latest complete one,
and restoring it. A checkpoint holds only trainable tensors (the adapter for LoRA), optimizer and
scheduler state, RNG states and the loop's counters. Data order needs no state: it is a pure
function of (seed, epoch). Does not own: the final adapter export.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_PREFIX = "step-"


@dataclass
class LoopState:
    step: int = 0  # optimizer steps completed
    trained_tokens: int = 0  # non-padding tokens processed so far
    train_seconds: float = 0.0  # wall time spent in optimizer steps (forward, backward, update)
    loop_seconds: float = 0.0  # wall time of the whole loop, validation and checkpoints included
    best_val_loss: float | None = None  # val loss at the best step
    best_score: float | None = None  # the selection criterion at the best step, lower is better
    best_step: int | None = None
    evals_without_improvement: int = 0


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that requires grad, by name, detached and contiguous."""
    return {name: p.detach().contiguous().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    missing = [name for name, p in parameters.items() if p.requires_grad and name not in tensors]
    if missing:
        raise ValueError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {missing[0]}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            parameters[name].copy_(tensor)


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: LoopState,
    keep: int,
) -> Path:
    """Write `directory/step-N` atomically and prune all but the newest `keep` checkpoints."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{_PREFIX}{state.step:08d}"
    staging = directory / f".staging-{state.step:08d}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file(trainable_state(model), str(staging / "trainable.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        },
        staging / "state.pt",
    )
    (staging / "loop.json").write_text(json.dumps(asdict(state)), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    staging.rename(final)
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging folders are never listed)."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.name.startswith(_PREFIX) and path.is_dir())


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> LoopState:
    """Restore everything `save_checkpoint` wrote; returns the loop counters."""
    load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
    saved: dict[str, Any] = torch.load(path / "state.pt", weights_only=False)
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    np.random.set_state(saved["numpy_rng"])
    random.setstate(saved["python_rng"])
    return LoopState(**json.loads((path / "loop.json").read_text(encoding="utf-8")))
