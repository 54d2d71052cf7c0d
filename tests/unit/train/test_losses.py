from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunesmith.data.render import IGNORE_INDEX
from tunesmith.train.losses import linear_cross_entropy


@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_matches_cross_entropy_over_full_logits_in_value_and_gradients(chunk_size: int) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(2, 9, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (2, 9))
    targets[0, :4] = IGNORE_INDEX
    targets[1, 7:] = IGNORE_INDEX

    loss, count = linear_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    (loss * 0.5).backward()
    ours = hidden.grad.clone(), weight.grad.clone()
    hidden.grad, weight.grad = None, None

    reference = F.cross_entropy((hidden @ weight.T).reshape(-1, 50), targets.reshape(-1), reduction="sum")
    (reference * 0.5).backward()
    assert count == int((targets != IGNORE_INDEX).sum())
    assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(ours[0], hidden.grad)
    torch.testing.assert_close(ours[1], weight.grad)


def test_frozen_weight_gets_no_gradient() -> None:
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(20, 8)
    loss, _ = linear_cross_entropy(hidden, weight, torch.randint(0, 20, (5,)))
    loss.backward()
    assert weight.grad is None
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0


def test_bf16_compute_matches_fp32_cross_entropy_of_the_same_bf16_logits() -> None:
    """Under bf16 the per-token loss is rounded to bf16 and the softmax stored in bf16, nothing worse."""
    torch.manual_seed(0)
    hidden = torch.randn(300, 64).to(torch.bfloat16).requires_grad_()
    weight = (torch.randn(2000, 64) * 0.3).to(torch.bfloat16)
    targets = torch.randint(0, 2000, (300,))
    loss, _ = linear_cross_entropy(hidden, weight, targets, chunk_size=128, compute_dtype=torch.bfloat16)
    loss.backward()
    logits = (hidden.detach() @ weight.T).float()  # what the bf16 matmul produces, then exact fp32 from there
    exact = hidden.detach().float().requires_grad_()
    reference = F.cross_entropy((exact.to(torch.bfloat16) @ weight.T).float(), targets, reduction="sum")
    reference.backward()
    assert loss.item() == pytest.approx(F.cross_entropy(logits, targets, reduction="sum").item(), rel=2e-3)
    assert hidden.grad is not None
    error = (hidden.grad.float() - exact.grad).norm() / exact.grad.norm()
    assert error < 0.02


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_target_too_unlikely_for_the_softmax_still_gets_its_exact_loss(dtype: torch.dtype) -> None:
    hidden = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=dtype, requires_grad=True)
    weight = torch.tensor([[100.0, 0.0], [0.0, 0.0], [-100.0, 0.0], [0.0, 3.0]], dtype=dtype)
    targets = torch.tensor([2, 3])  # row 0: probability e**-200, zero in any float; row 1: ordinary
    loss, _ = linear_cross_entropy(hidden, weight, targets, compute_dtype=dtype)
    loss.backward()
    reference = F.cross_entropy((hidden.detach().float() @ weight.float().T), targets, reduction="sum")
    assert loss.item() == pytest.approx(reference.item(), rel=1e-3)  # ~200 + 0.14, finite
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
