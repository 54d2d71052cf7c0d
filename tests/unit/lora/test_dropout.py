"""FastDropout must be dropout: the right drop rate, unbiased, the same mask forward and backward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.lora.dropout import FastDropout, use_fast_dropout
from tunesmith.models.adapters import add_lora
from tunesmith.models.loading import load_model


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_drops_at_the_rate_asked_and_scales_what_it_keeps(p: float) -> None:
    torch.manual_seed(0)
    dropout = FastDropout(p).train()
    inputs = torch.ones(1000, 1001)  # an odd count: the last 64-bit draw is only partly used
    outputs = dropout(inputs)
    dropped = (outputs == 0).float().mean().item()
    assert dropped == pytest.approx(p, abs=0.002)  # 1e6 draws: the standard error is at most 5e-4
    kept = outputs[outputs != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - dropout.threshold / 2**14)))
    assert outputs.mean().item() == pytest.approx(1.0, abs=0.003)  # unbiased in expectation
    # Every lane of the 64-bit draw is uniform: each of the four element phases drops at rate p too.
    per_lane = (outputs.flatten()[: 4 * (outputs.numel() // 4)].view(-1, 4) == 0).float().mean(0)
    assert per_lane.tolist() == pytest.approx([p] * 4, abs=0.004)


def test_backward_uses_the_forward_mask_and_eval_is_identity() -> None:
    torch.manual_seed(1)
    dropout = FastDropout(0.5).train()
    inputs = torch.randn(64, 33, requires_grad=True)
    outputs = dropout(inputs)
    outputs.sum().backward()
    assert inputs.grad is not None
    torch.testing.assert_close(inputs.grad, (outputs != 0).float() * 2.0)
    dropout.eval()
    assert dropout(inputs) is inputs
    with pytest.raises(ValueError, match="dropout must be"):
        FastDropout(1.0)


def test_replaces_every_lora_dropout_and_keeps_the_rate(tiny_model_dir: Path) -> None:
    model = add_lora(load_model(str(tiny_model_dir)), 4, 8, 0.1, "all-linear")
    assert use_fast_dropout(model) == 2 * 7  # two layers, seven linear layers each
    dropouts = [module for module in model.modules() if isinstance(module, FastDropout)]
    assert len(dropouts) == 14 and all(module.p == 0.1 for module in dropouts)
    assert not any(isinstance(module, torch.nn.Dropout) for module in model.modules())
