"""LoRA dropout whose random mask is cheap to draw on a CPU.

Owns: `FastDropout`, a drop-in for the `nn.Dropout` peft puts in front of every LoRA `A` matrix, and
`use_fast_dropout`, which swaps them in. On a CPU, `torch.nn.functional.dropout` draws its mask with
`bernoulli_`, one generator call per element: with LoRA on all seven linear layers of SmolLM2-135M
that was 17% of a bf16 training step. `FastDropout` draws 64 random bits per call and cuts them into
four 16-bit lanes, one per element (5–6× faster), and drops an element when its lane falls below
`round(p · 2**16)`: the drop rate is `p` to within 2**-17, and kept values are scaled by the exact
`1 / (1 - rate)`. Forward and backward are the same masked scaling as `nn.Dropout`; only the random
stream differs. On CUDA the native dropout is already a fused kernel and stays.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_LANES = 1 << 16  # one 16-bit lane of a 64-bit random draw per element


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, inputs * scale, 0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad_output * ctx.scale, 0), None, None


class FastDropout(nn.Module):
    """`nn.Dropout(p)` in training mode with a mask drawn from 16-bit lanes of 64-bit random numbers."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * _LANES)  # lanes below this are dropped
        self.scale = _LANES / (_LANES - self.threshold)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return inputs
        count = inputs.numel()
        bits = torch.empty((count + 3) // 4, dtype=torch.int64, device=inputs.device)
        bits.random_(-(2**63), 2**63 - 1)  # the full 64-bit range: every 16-bit lane uniform
        lanes = bits.view(torch.int16)[:count].view(inputs.shape)
        keep = lanes >= self.threshold - _LANES // 2  # int16 lanes span [-2**15, 2**15)
        return _MaskedScale.apply(inputs, keep, self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every LoRA dropout of `model` (peft's `lora_dropout` dicts) by `FastDropout`; returns how many."""
    replaced = 0
    for module in model.modules():
        dropouts = module._modules.get("lora_dropout")
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if isinstance(dropout, nn.Dropout):
                dropouts[name] = FastDropout(dropout.p)
                replaced += 1
    return replaced
