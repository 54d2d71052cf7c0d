"""Training records that cross module boundaries: the step plan in `plan.json` and a run's result. No torch.

Owns: `StepPlan`, how every optimizer step of a run is laid out (written once to `plan.json` so a resumed
run steps exactly as it began, versioned so an old file is refused with what to do, never guessed at),
and `TrainResult`, a finished run's summary (`run.json`, the `succeeded` event, the registry). Does not
own: choosing the layout (`tunesmith.train.plan`) or the run folder (`tunesmith.train.rundir`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import ConfigError

# 2: the first versioned layout (tunesmith 0.1 after the training core was split out). Files without a
# version were written by earlier builds, whose defaults for missing keys depended on the device.
STEP_PLAN_VERSION = 2


@dataclass(frozen=True)
class StepPlan:
    """How each optimizer step runs: packed rows split into passes of at most `pass_tokens` tokens."""

    pass_tokens: int
    gradient_checkpointing: bool
    memory_gb: dict[str, float]  # the estimate by component, and its "total"
    budget_gb: float  # memory the run may use
    fits: bool  # whether the estimate is within the budget
    fused_layers: bool  # tunesmith's fused LoRA/MLP/norm training forwards (`tunesmith.lora`)
    notes: list[str] = field(default_factory=list)  # why the layout is what it is

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_record(self) -> dict[str, Any]:
        """What `plan.json` holds: the plan and its version."""
        return {"version": STEP_PLAN_VERSION} | self.to_dict()


def read_step_plan(path: Path) -> StepPlan:
    """The plan in `path` (a run's `plan.json`); a file of another version is refused with what to do."""
    record = json.loads(path.read_text(encoding="utf-8"))
    version = record.pop("version", None)
    if version != STEP_PLAN_VERSION:
        written_by = "an earlier tunesmith" if version is None else f"step plan version {version}"
        raise ConfigError(
            f"{path}: written by {written_by}, this tunesmith reads version {STEP_PLAN_VERSION}; resume "
            "the run with the tunesmith that started it, or start a new run from its config.yaml"
        )
    return StepPlan(**record)


@dataclass
class TrainResult:
    """A finished run: what it trained, how fast, what it reached and where its artifact is."""

    run_id: str
    run_dir: str
    status: str
    method: str
    base_model: str
    artifact_dir: str | None
    steps: int
    trained_tokens: int
    wall_seconds: float
    train_seconds: float
    tokens_per_second: float
    train_loss: float | None
    val_loss: float | None
    best_step: int | None
    data_hash: str
    val_data_hash: str | None
    num_examples: int
    num_val_examples: int
    precision: str
    device: str
    peak_memory_gb: float  # CUDA allocator peak on GPU, process peak RSS on CPU
    micro_batch_tokens: int
    gradient_checkpointing: bool
    validation: str  # what it validated on: a `tunesmith.train.validation.ValidationSource` value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
