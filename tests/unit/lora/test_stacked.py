"""A served bf16 row must keep a LoRA delta under half a bf16 step, as evaluation does."""

from __future__ import annotations

import torch
from torch import nn

from tunesmith.lora.stacked import Router, StackedLoRALinear, route


def test_served_bf16_rows_keep_a_small_delta_and_base_rows_stay_base() -> None:
    torch.manual_seed(0)
    base = nn.Linear(256, 128, bias=False).bfloat16()
    with torch.no_grad():
        base.weight.normal_(0, 0.5)
    a, b = (
        (torch.randn(4, 256) * 0.1).bfloat16(),
        (torch.randn(128, 4) * 2e-3).bfloat16(),
    )  # ~1/5 of a bf16 step
    x = torch.randn(65, 16, 256).bfloat16()  # rows 0-63 on the adapter, row 64 on the base
    router = Router()
    layer = StackedLoRALinear(base, slots=2, rank=4, router=router)
    layer.put(0, a, b)
    with torch.no_grad():
        for tokens in (16, 1):  # prefill, then a decode step's shape
            router.current = route([0] * 64 + [None], x.device)
            served = layer(x[:, :tokens])
            rows = x[:64, :tokens].float()
            base_exact = rows @ base.weight.float().T
            delta = (rows @ a.float().T) @ b.float().T
            kept = ((served[:64].float() - base_exact) * delta).sum() / delta.square().sum()
            assert 0.8 < kept < 1.2, tokens
            torch.testing.assert_close(served[64:], base(x[64:, :tokens]), rtol=0, atol=0.02)
