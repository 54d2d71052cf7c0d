"""A LoRA linear layer's training forward and backward as one autograd function (CPU).

Owns: `use_fused_lora`, which gives each plain peft `lora.Linear` of a model a training forward that
computes `base(x) + scaling · B(A(dropout(x)))` in one `torch.autograd.Function`.

Why: peft's forward is general, and on a CPU its generality is most of a LoRA layer's cost beyond the
base matmul. Under bf16 autocast it casts the input to fp32 for the adapter (a copy the size of the
input), applies dropout in fp32, casts back to bf16 for `A`, scales the `B` output and adds it in two
more passes, and autograd mirrors every one of those in backward. Saved for backward per layer: the
dropped fp32-then-bf16 input and the mask, 3 bytes per input element. Here, in the compute dtype:

    forward   y = x·Wᵀ;  t = (x ⊙ keep)·Aᵀ;  y += (s/(1-p)) · t·Bᵀ          (the add fused into addmm)
    backward  u = (s/(1-p)) · g·B;  dx = g·W + keep ⊙ (u·A);  dA = uᵀ·(x ⊙ keep);  dB = (s/(1-p)) · gᵀ·t

Saved: `x` (the same tensor the base layer would keep, shared by q/k/v), `t` (rank-sized) and the
dropout mask's seed: `keep` is redrawn from it in backward (`tunesmith.train.dropout.keep_mask`),
which costs less than holding a mask per layer costs memory. The mask is drawn as `FastDropout`
draws it, so with the same random state the result equals peft's layer with `FastDropout`.
Gradients reach `A` and `B` only: the base is frozen.

Applies where it is exact: training mode, gradients on, one active adapter, unmerged, plain LoRA (no
DoRA or other variant, no LoRA bias, no fan-in-fan-out base), frozen `nn.Linear` base, CPU tensors.
Anything else takes peft's own forward, so evaluation and generation are untouched. CUDA keeps peft's
path: its casts are cheap launches there, and this path has not been measured on a GPU.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

from tunesmith.train.dropout import FastDropout, keep_mask, new_seed, scratch


class _FusedLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        inputs: torch.Tensor,  # (N, in), compute dtype
        weight: torch.Tensor,  # (out, in), frozen
        bias: torch.Tensor | None,
        lora_a: torch.Tensor,  # (r, in)
        lora_b: torch.Tensor,  # (out, r)
        scale: float,  # LoRA scaling times the dropout's 1/(1-p)
        threshold: int,  # dropout lanes below this are dropped; 0: no dropout
        seed: int,  # of the dropout mask, redrawn in backward
    ) -> torch.Tensor:
        dtype = inputs.dtype
        a, b = lora_a.to(dtype), lora_b.to(dtype)
        output = F.linear(inputs, weight.to(dtype), None if bias is None else bias.to(dtype))
        dropped = inputs
        if threshold:
            keep = keep_mask(inputs.shape, threshold, seed, dtype, inputs.device)
            dropped = torch.mul(inputs, keep, out=_scratch_like(inputs, "dropped"))
            scale /= 2  # keep_mask's multipliers are 0 and 2: the low-rank product is twice t (exact)
        low_rank = dropped @ a.T  # (N, r)
        output.addmm_(low_rank, b.T, alpha=scale)
        ctx.save_for_backward(inputs, weight, a, b, low_rank)
        ctx.scale, ctx.threshold, ctx.seed = scale, threshold, seed
        ctx.master_dtypes = (lora_a.dtype, lora_b.dtype)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        inputs, weight, a, b, low_rank = ctx.saved_tensors
        grad = grad_output.to(inputs.dtype)
        keep = None
        if ctx.threshold:
            keep = keep_mask(inputs.shape, ctx.threshold, ctx.seed, inputs.dtype, inputs.device)
        scaled = (grad @ b).mul_(ctx.scale)  # (N, r): u, or u/2 against the doubled multipliers
        grad_inputs = None
        if ctx.needs_input_grad[0]:
            grad_inputs = grad @ weight.to(inputs.dtype)
            if keep is None:
                grad_inputs.addmm_(scaled, a)
            else:
                grad_inputs.addcmul_(torch.mm(scaled, a, out=_scratch_like(inputs, "lora-grad")), keep)
        dropped = inputs
        if keep is not None:
            dropped = torch.mul(inputs, keep, out=_scratch_like(inputs, "dropped"))
        grad_a = (scaled.T @ dropped).to(ctx.master_dtypes[0])
        grad_b = (low_rank.T @ grad).T.mul_(ctx.scale).to(ctx.master_dtypes[1])  # 1.7x faster than gradᵀ·t
        return grad_inputs, None, None, grad_a, grad_b, None, None, None


def _scratch_like(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """A scratch buffer shaped like `tensor`, consumed before the next layer asks for `name`."""
    return scratch(name, tensor.numel(), tensor.dtype, tensor.device).view(tensor.shape)


def _dropout_parts(dropout: nn.Module) -> tuple[float, int] | None:
    """`(scale, threshold)` of a LoRA dropout module in training: FastDropout's lanes; None if unknown."""
    if isinstance(dropout, nn.Identity):
        return 1.0, 0
    if isinstance(dropout, FastDropout | nn.Dropout):
        fast = dropout if isinstance(dropout, FastDropout) else FastDropout(dropout.p)
        return fast.scale, fast.threshold
    return None


def _applies(layer: LoraLinear, inputs: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if args or kwargs or not layer.training or not torch.is_grad_enabled() or inputs.device.type != "cpu":
        return False
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return False
    name = layer.active_adapters[0]
    base = layer.get_base_layer()
    return (
        name in layer.lora_A
        and name not in getattr(layer, "lora_variant", {})
        and not layer.use_dora.get(name, False)
        and not layer.lora_bias.get(name, False)
        and not layer.fan_in_fan_out
        and type(base) is nn.Linear
        and not base.weight.requires_grad
        and (base.bias is None or not base.bias.requires_grad)
        and layer.lora_A[name].bias is None
        and layer.lora_B[name].bias is None
        and _dropout_parts(layer.lora_dropout[name]) is not None
    )


def _fused_forward(self: LoraLinear, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if not _applies(self, x, args, kwargs):
        return LoraLinear.forward(self, x, *args, **kwargs)
    name = self.active_adapters[0]
    keep_scale, threshold = _dropout_parts(self.lora_dropout[name])  # type: ignore[misc]
    base = self.get_base_layer()
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    flat = x.reshape(-1, x.shape[-1]).to(dtype)  # a view when x is already in the compute dtype
    with torch.autocast(device_type=device, enabled=False):
        output = _FusedLoraLinear.apply(
            flat,
            base.weight,
            base.bias,
            self.lora_A[name].weight,
            self.lora_B[name].weight,
            self.scaling[name] * keep_scale,
            threshold,
            new_seed() if threshold else 0,  # drawn as FastDropout draws it
        )
    return output.view(*x.shape[:-1], output.shape[-1])


def use_fused_lora(model: nn.Module) -> int:
    """Give every peft `lora.Linear` of `model` the fused training forward; returns how many.

    Layers whose configuration it does not cover keep peft's forward at call time (see the module doc).
    """
    fused = 0
    for module in model.modules():
        if isinstance(module, LoraLinear):
            module.forward = types.MethodType(_fused_forward, module)  # type: ignore[method-assign]
            fused += 1
    return fused
