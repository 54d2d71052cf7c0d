"""Odds-ratio preference optimisation: `train_orpo(spec)` and `ORPOObjective`, readable top to bottom.

Owns: ORPO's loss over packed preference pairs (`tunesmith.train.preference_losses.orpo_losses`): the
chosen answer's mean token loss plus λ times the odds-ratio term, with no reference model at all; its
validation metrics are DPO's (`tunesmith.train.dpo.pair_metrics`), rewards being λ times the mean token
log-probability as TRL logs them. Does not own: the recipe, the loop, the loss formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tunesmith.config import TrainSpec
from tunesmith.train.dpo import pair_metrics
from tunesmith.train.loop import ValidationHook
from tunesmith.train.model import TrainingModel
from tunesmith.train.preference import (
    SequencePass,
    Sequences,
    answer_lengths,
    pass_log_probs,
    train_preference,
)
from tunesmith.train.preference_losses import PairLosses, orpo_losses
from tunesmith.train.records import TrainResult
from tunesmith.train.rundir import EventListener


def train_orpo(
    spec: TrainSpec,
    *,
    listener: EventListener | None = None,
    resume: Path | None = None,
    progress: bool = True,
    on_validation: ValidationHook | None = None,
) -> TrainResult:
    """ORPO-tune a LoRA adapter on `spec.data` (preference pairs); see `train_preference`."""
    return train_preference(
        spec, _build, listener=listener, resume=resume, progress=progress, on_validation=on_validation
    )


def _build(spec: TrainSpec, model: TrainingModel, train: Sequences, val: Sequences) -> ORPOObjective:
    return ORPOObjective(model, train, val, spec.orpo_lambda)


@dataclass(frozen=True)
class ORPOObjective:
    """ORPO's loss summed over pairs (`tunesmith.train.loop.Objective`)."""

    model: TrainingModel
    train: Sequences  # [chosen, rejected] per pair, no reference
    val: Sequences
    orpo_lambda: float

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
        mean = policy / answer_lengths(batch).to(policy.device)  # per-token mean log-probabilities
        return orpo_losses(mean[:, 0], mean[:, 1], orpo_lambda=self.orpo_lambda), policy.detach()
