"""Resumable checkpoints: exactly what is needed to continue a run bit-for-bit after a kill.

Owns: writing a checkpoint folder durably (staged, each file and the folder fsynced, then renamed, so a
kill leaves either the whole checkpoint or none), finding the complete ones, and restoring the newest
that reads back whole (a torn or damaged one is skipped with a warning). A checkpoint holds only
trainable tensors (the adapter for LoRA), optimizer and scheduler state, RNG states and the loop's
counters, all read back with `torch.load(weights_only=True)`: a run folder from someone else can hold
data, never code. Data order needs no state: it is a pure function of (seed, epoch). Does not own: the
final adapter export.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
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
    planned_steps: int = 0  # the steps the schedule spans, re-planned under a time budget (0: not recorded)
    world_size: int = 1  # processes that trained (`tunesmith train --nproc`)


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
    weights: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: LoopState,
    keep: int,
    rank_rngs: list[dict[str, Any]] | None = None,
) -> Path:
    """Write `directory/step-N` atomically and prune all but the newest `keep` checkpoints.

    `weights`: the trainable tensors (`trainable_state`, or gathered whole from sharded processes);
    `optimizer_state`: the optimizer's `state_dict()` (or gathered whole). `rank_rngs`: every process's
    `rng_state()` by rank, when several trained (each resumes its own draws).
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{_PREFIX}{state.step:08d}"
    staging = directory / f".staging-{state.step:08d}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    save_file(weights, str(staging / "trainable.safetensors"))
    torch.save(
        {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), **rng_state()}
        | ({"rank_rngs": rank_rngs} if rank_rngs is not None else {}),
        staging / "state.pt",
    )
    (staging / "loop.json").write_text(json.dumps(asdict(state)), encoding="utf-8")
    for path in [*staging.iterdir(), staging]:
        _fsync(path)
    shutil.rmtree(final, ignore_errors=True)  # only a retried step's own, never an earlier checkpoint
    staging.rename(final)
    _fsync(directory)
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first (staging folders are never listed)."""
    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if path.name.startswith(_PREFIX) and path.is_dir())


@dataclass(frozen=True)
class _Saved:
    trainable: dict[str, torch.Tensor]
    state: dict[str, Any]
    loop: LoopState


def _read(path: Path) -> _Saved:
    """Everything in checkpoint `path`, read whole before anything is restored from it."""
    return _Saved(
        trainable=load_file(str(path / "trainable.safetensors")),
        state=torch.load(path / "state.pt", weights_only=True),
        loop=LoopState(**json.loads((path / "loop.json").read_text(encoding="utf-8"))),
    )


# Loads a checkpoint's trainable tensors and optimizer state into the model and optimizer.
Restore = Callable[[dict[str, torch.Tensor], dict[str, Any]], None]


def load_latest_checkpoint(
    checkpoints: list[Path],
    restore: Restore,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int = 0,
) -> tuple[LoopState, list[str]]:
    """Restore the newest of `checkpoints` that reads back whole; returns its counters and what was skipped.

    Process `rank` of a run of several takes its own random generators where the checkpoint holds them
    (one written by as many processes); otherwise rank 0's. Raises ValueError when none reads back.
    """
    skipped: list[str] = []
    for path in reversed(checkpoints):
        try:
            saved = _read(path)
        except Exception as error:  # torn, truncated or tampered files: any reader's error
            skipped.append(f"{path.name}: {type(error).__name__}: {error}")
            continue
        restore(saved.trainable, saved.state["optimizer"])
        scheduler.load_state_dict(saved.state["scheduler"])
        rank_rngs = saved.state.get("rank_rngs", [])
        set_rng_state(rank_rngs[rank] if rank < len(rank_rngs) else saved.state)
        return saved.loop, skipped
    raise ValueError(f"no checkpoint could be read back: {'; '.join(skipped)}")


def rng_state() -> dict[str, Any]:
    """This process's random generators (dropout draws), as a checkpoint holds them."""
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": _numpy_rng_state(),
        "python_rng": random.getstate(),
    }


def set_rng_state(saved: dict[str, Any]) -> None:
    torch.set_rng_state(saved["torch_rng"])
    if saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    _set_numpy_rng_state(saved["numpy_rng"])
    random.setstate(saved["python_rng"])


def _numpy_rng_state() -> dict[str, Any]:
    """numpy's global generator state as plain values and a tensor (what `weights_only` loading takes)."""
    state = np.random.get_state(legacy=False)
    inner = state["state"]
    return {
        "key": torch.from_numpy(inner["key"].astype(np.int64)),
        "pos": int(inner["pos"]),
        "has_gauss": int(state["has_gauss"]),
        "gauss": float(state["gauss"]),
    }


def _set_numpy_rng_state(saved: dict[str, Any]) -> None:
    key = saved["key"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", key, saved["pos"], saved["has_gauss"], saved["gauss"]))


def _fsync(path: Path) -> None:
    """Flush `path` (a file or a folder's entries) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
