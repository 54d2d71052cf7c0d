"""Direct preference optimisation: `train_dpo(spec)` and `DPOObjective`, readable top to bottom.

Owns: DPO's loss over packed preference pairs (`tunesmith.train.preference_losses.dpo_losses`) against
reference log-probabilities computed once before training (`tunesmith.train.preference`), and its
validation metrics: reward margin, preference accuracy, chosen and rejected log-probabilities. Does not
own: the recipe, the loop, the loss formula.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tunesmith.config import TrainSpec
from tunesmith.train.distributed import ALONE, Replicas
from tunesmith.train.loop import ValidationHook
from tunesmith.train.model import TrainingModel
from tunesmith.train.preference import (
    SequencePass,
    Sequences,
    answer_lengths,
    pass_log_probs,
    train_preference,
)
from tunesmith.train.preference_losses import PairLosses, dpo_losses
from tunesmith.train.records import TrainResult
from tunesmith.train.rundir import EventListener


def train_dpo(
    spec: TrainSpec,
    *,
    listener: EventListener | None = None,
    resume: Path | None = None,
    progress: bool = True,
    on_validation: ValidationHook | None = None,
    replicas: Replicas = ALONE,
) -> TrainResult:
    """DPO-tune a LoRA adapter on `spec.data` (preference pairs); see `train_preference`."""
    return train_preference(
        spec, _build, listener=listener, resume=resume, progress=progress, on_validation=on_validation,
        replicas=replicas,
    )  # fmt: skip


def _build(spec: TrainSpec, model: TrainingModel, train: Sequences, val: Sequences) -> DPOObjective:
    return DPOObjective(model, train, val, spec.beta, spec.label_smoothing, spec.rpo_alpha)


@dataclass(frozen=True)
class DPOObjective:
    """DPO's loss summed over pairs (`tunesmith.train.loop.Objective`)."""

    model: TrainingModel
    train: Sequences  # [chosen, rejected] per pair, with reference log-probabilities
    val: Sequences
    beta: float
    label_smoothing: float
    rpo_alpha: float

    def step_batches(self, examples: list[int]) -> list[SequencePass]:
        return self.train.passes(examples)

    def validation_batches(self) -> list[SequencePass]:
        return self.val.passes(range(len(self.val.groups)))

    def loss(self, batch: SequencePass) -> torch.Tensor:
        return self._pair_losses(batch)[0].losses.sum()

    @torch.no_grad()
    def validation_metrics(self) -> dict[str, float]:
        self.model.model.eval()
        results = [self._pair_losses(batch) for batch in self.validation_batches()]
        self.model.model.train()
        return pair_metrics(results)

    def _pair_losses(self, batch: SequencePass) -> tuple[PairLosses, torch.Tensor]:
        policy = pass_log_probs(self.model, batch)  # (P, 2): chosen, rejected
        assert batch.reference is not None
        reference = batch.reference.to(policy.device)
        losses = dpo_losses(
            policy[:, 0], policy[:, 1], reference[:, 0], reference[:, 1],
            beta=self.beta, label_smoothing=self.label_smoothing,
        )  # fmt: skip
        if self.rpo_alpha:
            chosen_mean = policy[:, 0] / answer_lengths(batch)[:, 0].to(policy.device)
            losses = replace(losses, losses=losses.losses - self.rpo_alpha * chosen_mean)
        return losses, policy.detach()


def pair_metrics(results: list[tuple[PairLosses, torch.Tensor]]) -> dict[str, float]:
    """Validation metrics of a pair objective: loss per pair, mean reward margin, preference accuracy,
    log-probs."""
    chosen = torch.cat([losses.chosen_rewards for losses, _ in results])
    rejected = torch.cat([losses.rejected_rewards for losses, _ in results])
    policy = torch.cat([log_probs for _, log_probs in results])
    return {
        "loss": float(torch.cat([losses.losses for losses, _ in results]).mean()),
        "reward_margin": float((chosen - rejected).mean()),
        "preference_accuracy": float((chosen > rejected).float().mean()),
        "chosen_log_prob": float(policy[:, 0].mean()),
        "rejected_log_prob": float(policy[:, 1].mean()),
    }
