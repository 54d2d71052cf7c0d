"""Preference losses: pure tensor functions of sequence log-probabilities, no model or config knowledge.

Owns: the per-example losses and rewards of DPO (sigmoid loss with label smoothing, Rafailov et al.
2023), KTO (Ethayarajh et al. 2024) and ORPO (Hong et al. 2024), written as TRL's `DPOTrainer`,
`KTOTrainer` and `ORPOTrainer` compute them, so their numbers can be compared. Each returns one loss
per pair or example (the objective sums them) and detached rewards for the logged metrics. Does not own:
the log-probabilities (`tunesmith.train.losses.sequence_log_probs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PairLosses:
    losses: torch.Tensor  # (P,) one loss per pair
    chosen_rewards: torch.Tensor  # (P,) detached
    rejected_rewards: torch.Tensor  # (P,) detached


def dpo_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    reference_chosen: torch.Tensor,
    reference_rejected: torch.Tensor,
    *,
    beta: float,
    label_smoothing: float = 0.0,
) -> PairLosses:
    """DPO's loss per pair from summed log-probabilities `(P,)` of each answer under policy and reference.

    loss = -(1-ε)·log σ(β·h) - ε·log σ(-β·h), h = (π_c - π_r) - (ref_c - ref_r); rewards β·(π - ref).
    """
    logits = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected)
    losses = (
        -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    )
    return PairLosses(
        losses,
        beta * (policy_chosen - reference_chosen).detach(),
        beta * (policy_rejected - reference_rejected).detach(),
    )


def kto_reference_point(policy_mismatched: torch.Tensor, reference_mismatched: torch.Tensor) -> torch.Tensor:
    """KTO's z₀: the batch's KL estimate from prompts paired with other examples' answers, clamped at 0.

    Detached, as in TRL: it is a reference point for the loss, not something to train.
    """
    return (policy_mismatched - reference_mismatched).mean().clamp(min=0).detach()


def kto_losses(
    policy: torch.Tensor,
    reference: torch.Tensor,
    desirable: torch.Tensor,
    kl: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KTO's loss per example `(N,)` and its detached reward β·(π - ref).

    Desirable answers: w_d·(1 - σ(β·(r - z₀))); undesirable ones: w_u·(1 - σ(β·(z₀ - r))), r = π - ref.
    """
    log_ratio = policy - reference
    good = desirable_weight * (1 - torch.sigmoid(beta * (log_ratio - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - log_ratio)))
    return torch.where(desirable, good, bad), beta * log_ratio.detach()


def orpo_losses(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, *, orpo_lambda: float) -> PairLosses:
    """ORPO's loss per pair from per-token mean log-probabilities `(P,)` of each answer (no reference).

    loss = -chosen_mean - λ·log σ(log odds(chosen) - log odds(rejected)), odds(p) = p / (1 - p), p = exp(mean);
    rewards λ·mean, as TRL logs them. TRL averages the NLL over the batch's chosen tokens; here it is
    each pair's mean, so that a pass's loss is a sum over pairs like the other objectives'.
    """
    log_odds = (chosen_mean - rejected_mean) - (
        torch.log1p(-torch.exp(chosen_mean)) - torch.log1p(-torch.exp(rejected_mean))
    )
    losses = -chosen_mean - orpo_lambda * F.logsigmoid(log_odds)
    return PairLosses(losses, orpo_lambda * chosen_mean.detach(), orpo_lambda * rejected_mean.detach())
