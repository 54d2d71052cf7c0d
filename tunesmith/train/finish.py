"""The end of a successful run, whatever its objective: the artifact, its card, the curve, `run.json`.

Owns: saving the trained adapter (LoRA) or model (full fine-tuning, in fp32) with its tokenizer and a
model card, the final loss curve, and the `TrainResult` written to `run.json` and the `succeeded`
event. Does not own: choosing the weights (the loop leaves the best validated ones in the model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.models.adapters import model_card, save_artifact
from tunesmith.train.loop import LoopOutcome
from tunesmith.train.model import TrainingModel
from tunesmith.train.plan import GB, peak_memory_bytes
from tunesmith.train.plots import plot_loss_curve
from tunesmith.train.records import StepPlan, TrainResult
from tunesmith.train.rundir import EventType, RunDir, RunStatus
from tunesmith.train.validation import ValidationSource


@dataclass(frozen=True)
class TrainedData:
    """What a run trained and validated on, for its card and result."""

    data_hash: str
    val_data_hash: str | None  # None for held-out validation examples: they are part of `data_hash`'s data
    num_examples: int
    num_val_examples: int
    validation: ValidationSource


def finish_run(
    run: RunDir,
    trained: TrainingModel,
    tokenizer: PreTrainedTokenizerBase,
    outcome: LoopOutcome,
    *,
    method: str,
    base_model: str,
    hyperparameters: dict[str, Any],
    data: TrainedData,
    plan: StepPlan,
) -> TrainResult:
    """Save the artifact of a finished run and return (and record) its result."""
    state = outcome.state
    model = trained.model
    model.eval()
    artifact_dir = run.path / ("model" if method == "full" else "adapter")  # lora, qlora: an adapter
    val_loss = state.best_val_loss
    metrics = {"train_loss": outcome.train_loss, "val_loss": val_loss, "best_step": state.best_step}
    card = model_card(
        run_id=run.run_id,
        base_model=base_model,
        method=method,
        data_hash=data.data_hash,
        hyperparameters=hyperparameters,
        metrics=metrics,
    )
    if method == "full":
        model.to(torch.float32)
    save_artifact(model, tokenizer, artifact_dir, card)
    plot_loss_curve(run.read_metrics(), run.path / "loss_curve.png", title=run.run_id)
    result = TrainResult(
        run_id=run.run_id,
        run_dir=str(run.path),
        status=RunStatus.succeeded.value,
        method=method,
        base_model=base_model,
        artifact_dir=str(artifact_dir),
        steps=state.step,
        trained_tokens=state.trained_tokens,
        wall_seconds=round(state.loop_seconds, 3),
        train_seconds=round(state.train_seconds, 3),
        tokens_per_second=round(state.trained_tokens / state.train_seconds, 1)
        if state.train_seconds
        else 0.0,
        train_loss=outcome.train_loss,
        val_loss=val_loss,
        best_step=state.best_step,
        data_hash=data.data_hash,
        val_data_hash=data.val_data_hash,
        num_examples=data.num_examples,
        num_val_examples=data.num_val_examples,
        precision="bf16" if trained.bf16 else "fp32",
        device=trained.device,
        peak_memory_gb=round(peak_memory_bytes(trained.device) / GB, 2),
        micro_batch_tokens=plan.pass_tokens,
        gradient_checkpointing=plan.gradient_checkpointing,
        validation=data.validation.value,
    )
    run.write_json("run.json", result.to_dict())
    run.emit(EventType.succeeded, f"saved to {artifact_dir}", **result.to_dict())
    return result
