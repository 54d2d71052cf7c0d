"""Kahneman-Tversky optimisation: `train_kto(spec)` and `KTOObjective`, readable top to bottom.

Owns: KTO's loss over rated answers (thumbs up or down, no pairs needed;
`tunesmith.train.preference_losses.kto_losses`), with the reference point z₀ estimated per pass from
each prompt paired with another example's answer (a second forward without gradients; reference cached),
as TRL does; and its validation metrics: the margin between the mean rewards of good and bad answers,
the share of answers whose reward has the sign of their label, and their log-probabilities. Does not
own: the recipe, the loop, the loss formula.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import torch

from tunesmith.config import TrainSpec
from tunesmith.train.loop import ValidationHook
from tunesmith.train.model import TrainingModel
from tunesmith.train.preference import SequencePass, Sequences, pass_log_probs, train_preference
from tunesmith.train.preference_losses import kto_losses, kto_reference_point
from tunesmith.train.records import TrainResult
from tunesmith.train.rundir import EventListener


def train_kto(
    spec: TrainSpec,
    *,
    listener: EventListener | None = None,
    resume: Path | None = None,
    progress: bool = True,
    on_validation: ValidationHook | None = None,
) -> TrainResult:
    """KTO-tune a LoRA adapter on `spec.data` (rated answers); see `train_preference`."""
    return train_preference(
        spec, _build, listener=listener, resume=resume, progress=progress, on_validation=on_validation
    )


def _build(spec: TrainSpec, model: TrainingModel, train: Sequences, val: Sequences) -> KTOObjective:
    return KTOObjective(
        model, *_answers_and_mismatched(train), *_answers_and_mismatched(val),
        spec.beta, spec.desirable_weight, spec.undesirable_weight,
    )  # fmt: skip


@dataclass(frozen=True)
class KTOPass:
    answers: SequencePass  # trained on
    mismatched: SequencePass  # the same prompts with other answers: the KL estimate, no gradients

    @property
    def num_tokens(self) -> int:
        return self.answers.num_tokens

    @property
    def count(self) -> int:
        return self.answers.count


@dataclass(frozen=True)
class KTOObjective:
    """KTO's loss summed over rated answers (`tunesmith.train.loop.Objective`)."""

    model: TrainingModel
    train: Sequences  # one answer per example, with reference log-probabilities and labels
    train_mismatched: Sequences  # its prompt with the next example's answer, with reference
    val: Sequences
    val_mismatched: Sequences
    beta: float
    desirable_weight: float
    undesirable_weight: float

    def step_batches(self, examples: list[int]) -> list[KTOPass]:
        return [
            KTOPass(answers, self.train_mismatched.pass_of(answers.examples))
            for answers in self.train.passes(examples)
        ]

    def validation_batches(self) -> list[KTOPass]:
        return [
            KTOPass(answers, self.val_mismatched.pass_of(answers.examples))
            for answers in self.val.passes(range(len(self.val.groups)))
        ]

    def loss(self, batch: KTOPass) -> torch.Tensor:
        return self._losses(batch, self.train)[0].sum()

    @torch.no_grad()
    def validation_metrics(self) -> dict[str, float]:
        self.model.model.eval()
        results = [self._losses(batch, self.val) for batch in self.validation_batches()]
        self.model.model.train()
        rewards = torch.cat([rewards for _, rewards, _, _ in results])
        log_probs = torch.cat([log_probs for _, _, log_probs, _ in results])
        desirable = torch.cat([desirable for _, _, _, desirable in results])
        return {
            "loss": float(torch.cat([losses for losses, _, _, _ in results]).mean()),
            "reward_margin": float(rewards[desirable].mean() - rewards[~desirable].mean()),
            "preference_accuracy": float(((rewards > 0) == desirable).float().mean()),
            "chosen_log_prob": float(log_probs[desirable].mean()),
            "rejected_log_prob": float(log_probs[~desirable].mean()),
        }

    def _losses(
        self, batch: KTOPass, split: Sequences
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Losses, rewards, log-probabilities and labels of the pass's answers."""
        policy = pass_log_probs(self.model, batch.answers)[:, 0]  # (E,)
        with torch.no_grad():
            policy_mismatched = pass_log_probs(self.model, batch.mismatched)[:, 0]
        assert batch.answers.reference is not None and batch.mismatched.reference is not None
        assert split.desirable is not None
        reference = batch.answers.reference[:, 0].to(policy.device)
        kl = kto_reference_point(policy_mismatched, batch.mismatched.reference[:, 0].to(policy.device))
        desirable = split.desirable[batch.answers.examples].to(policy.device)
        losses, rewards = kto_losses(
            policy, reference, desirable, kl,
            beta=self.beta, desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight,
        )  # fmt: skip
        return losses, rewards, policy.detach(), desirable


def _answers_and_mismatched(sequences: Sequences) -> tuple[Sequences, Sequences]:
    """A split's [answer, mismatched] groups as two splits of one sequence each (run in separate passes)."""
    reference = sequences.reference
    answers = replace(
        sequences,
        groups=[group[:1] for group in sequences.groups],
        reference=reference[:, :1] if reference is not None else None,
    )
    mismatched = replace(
        sequences,
        groups=[group[1:] for group in sequences.groups],
        reference=reference[:, 1:] if reference is not None else None,
    )
    return answers, mismatched
