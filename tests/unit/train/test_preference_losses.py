from __future__ import annotations

import math

import pytest
import torch

from tunesmith.data.render import IGNORE_INDEX
from tunesmith.train.losses import sequence_log_probs
from tunesmith.train.preference_losses import dpo_losses, kto_losses, kto_reference_point, orpo_losses


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_dpo_loss_and_rewards_match_hand_computed_values() -> None:
    # h = (-1 - -2) - (-1.5 - -1.5) = 1; loss = -log σ(0.1) = log(1 + e^-0.1)
    result = dpo_losses(_t(-1.0), _t(-2.0), _t(-1.5), _t(-1.5), beta=0.1)
    assert result.losses.item() == pytest.approx(math.log1p(math.exp(-0.1)))
    assert (result.chosen_rewards.item(), result.rejected_rewards.item()) == pytest.approx((0.05, -0.05))
    smoothed = dpo_losses(_t(-1.0), _t(-2.0), _t(-1.5), _t(-1.5), beta=0.1, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-0.1)) + 0.1 * math.log1p(math.exp(0.1))
    assert smoothed.losses.item() == pytest.approx(expected)


def test_dpo_loss_at_the_reference_is_log_2_and_its_gradient_prefers_the_chosen_answer() -> None:
    chosen = torch.tensor([-3.0], requires_grad=True)
    rejected = torch.tensor([-3.0], requires_grad=True)
    result = dpo_losses(chosen, rejected, _t(-3.0), _t(-3.0), beta=0.5)
    assert result.losses.item() == pytest.approx(math.log(2))
    result.losses.sum().backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert chosen.grad.item() == pytest.approx(-0.25) and rejected.grad.item() == pytest.approx(0.25)


def test_kto_losses_match_hand_computed_values() -> None:
    kl = kto_reference_point(_t(-2.0, -4.0), _t(-3.0, -4.0))  # mean(1, 0) = 0.5
    assert kl.item() == pytest.approx(0.5)
    assert kto_reference_point(_t(-5.0), _t(-3.0)).item() == 0.0  # clamped at 0
    losses, rewards = kto_losses(
        _t(-1.0, -1.0), _t(-2.0, -2.0), torch.tensor([True, False]), kl,
        beta=0.1, desirable_weight=1.0, undesirable_weight=2.0,
    )  # fmt: skip
    sigmoid = 1 / (1 + math.exp(-0.05))  # β·(r - z₀) = 0.1·(1 - 0.5)
    assert losses.tolist() == pytest.approx([1 - sigmoid, 2 * (1 - (1 - sigmoid))])
    assert rewards.tolist() == pytest.approx([0.1, 0.1])


def test_orpo_loss_matches_hand_computed_values() -> None:
    chosen, rejected = math.log(0.5), math.log(0.25)
    result = orpo_losses(_t(chosen), _t(rejected), orpo_lambda=0.1)
    log_odds = math.log(0.5 / 0.5) - math.log(0.25 / 0.75)  # log 3
    expected = -chosen - 0.1 * math.log(1 / (1 + math.exp(-log_odds)))
    assert result.losses.item() == pytest.approx(expected)
    assert result.chosen_rewards.item() == pytest.approx(0.1 * chosen)


def test_sequence_log_probs_and_their_gradients_match_a_full_log_softmax() -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    weight = torch.randn(11, 8)
    targets = torch.tensor([[3, 4, IGNORE_INDEX, 1, 2], [IGNORE_INDEX, 7, 7, IGNORE_INDEX, 0]])
    # sequences: row 0 holds sequence 0 (2 tokens) then 1 (2 tokens); row 1 holds sequence 2 (3 tokens)
    owners = torch.tensor([0, 0, 1, 1, 2, 2, 2])
    scale = torch.tensor([1.0, -2.0, 0.5])
    sums = sequence_log_probs(hidden, weight, targets, owners, 3, chunk_size=3)
    (sums * scale).sum().backward()
    ours = hidden.grad.clone()
    hidden.grad = None
    log_probs = torch.log_softmax(hidden @ weight.T, dim=-1)
    keep = targets != IGNORE_INDEX
    token = log_probs[keep].gather(1, targets[keep][:, None]).squeeze(1)
    expected = torch.zeros(3).index_add(0, owners, token)
    (expected * scale).sum().backward()
    assert torch.allclose(sums, expected, atol=1e-5)
    assert torch.allclose(ours, hidden.grad, atol=1e-5)


def test_sequence_log_probs_refuse_a_trainable_output_embedding() -> None:
    weight = torch.randn(11, 8, requires_grad=True)
    with pytest.raises(ValueError, match="frozen output embedding"):
        sequence_log_probs(torch.randn(3, 8), weight, torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0]), 1)
