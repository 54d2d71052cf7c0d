"""A LoRA linear layer's training forward and backward as one autograd function (CPU and CUDA).

Owns: `FusedLoraLinear`, which computes `base(x) + scaling · B(A(dropout(x)))` for a plain LoRA layer
in one `torch.autograd.Function`, and `FusedSwiGLULora`, a SwiGLU MLP whose `down_proj` is such a
layer. Does not own: which layers and calls run them (`tunesmith.lora.forward`, the table in
`tunesmith.lora`) or the dropout mask (`tunesmith.lora.dropout`).

Why: peft's forward is general, and on a CPU its generality is most of a LoRA layer's cost beyond the
base matmul (on a GPU the fused function's gain is mostly memory; figures in benchmarks/RESULTS.md,
"LoRA layers"). Under bf16 autocast peft casts the input to fp32 for the adapter (a copy the size of
the input), applies dropout in fp32, casts back to bf16 for `A`, scales the `B` output and adds it in
two more passes, and autograd mirrors every one of those in backward. Saved for backward per layer:
the dropped fp32-then-bf16 input and the mask, 3 bytes per input element. Here, in the compute dtype:

    forward   y = x·Wᵀ;  t = (x ⊙ keep)·Aᵀ;  y += (s/(1-p)) · t·Bᵀ          (the add fused into addmm)
    backward  u = (s/(1-p)) · g·B;  dx = g·W + keep ⊙ (u·A);  dA = uᵀ·(x ⊙ keep);  dB = (s/(1-p)) · gᵀ·t

Saved: `x` (the same tensor the base layer would keep, shared by q/k/v), `t` (rank-sized) and the
dropout mask's seed: `keep` is redrawn from it in backward (`tunesmith.lora.dropout.keep_mask`),
which costs less than holding a mask per layer costs memory. The mask is drawn as `FastDropout`
draws it, so with the same random state the result equals peft's layer with `FastDropout`.
Gradients reach `A` and `B` only: the base is frozen.

A SwiGLU MLP whose `down_proj` is such a layer runs `down(silu(gate) ⊙ up)` as one function too
(`FusedSwiGLULora`): it keeps gate and up and recomputes silu(gate) and the product in backward,
where autograd keeps all four `(tokens, intermediate)` tensors (plus peft's mask of the product):
6 KB less kept per token and layer of SmolLM2-135M, for a little more time (RESULTS.md); it is what
lets a whole batch run as one pass. On CUDA the mask's lanes come from torch's Philox generator
seeded with the same seed (see `keep_mask`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from tunesmith.lora.dropout import keep_mask, scratch


def _lora_forward(
    ctx: Any,
    inputs: torch.Tensor,  # (N, in), compute dtype
    weight: torch.Tensor,  # (out, in), frozen
    bias: torch.Tensor | None,
    lora_a: torch.Tensor,  # (r, in)
    lora_b: torch.Tensor,  # (out, r)
    scale: float,  # LoRA scaling times the dropout's 1/(1-p)
    threshold: int,  # dropout lanes below this are dropped; 0: no dropout
    seed: int,  # of the dropout mask, redrawn in backward
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """`base(x) + scale · B(A(dropout(x)))`, and the tensors `_lora_backward` needs besides `x`."""
    dtype = inputs.dtype
    a, b = lora_a.to(dtype), lora_b.to(dtype)
    output = F.linear(inputs, weight.to(dtype), None if bias is None else bias.to(dtype))
    dropped = inputs
    if threshold:
        keep = keep_mask(inputs.shape, threshold, seed, dtype, inputs.device, reuse=True)
        dropped = torch.mul(inputs, keep, out=_scratch_like(inputs, "dropped"))
        scale /= 2  # keep_mask's multipliers are 0 and 2: the low-rank product is twice t (exact)
    low_rank = dropped @ a.T  # (N, r)
    output.addmm_(low_rank, b.T, alpha=scale)
    ctx.scale, ctx.threshold, ctx.seed = scale, threshold, seed
    ctx.master_dtypes = (lora_a.dtype, lora_b.dtype)
    return output, (weight, a, b, low_rank)


def _lora_backward(
    ctx: Any,
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    saved: tuple[torch.Tensor, ...],
    needs_input_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Gradients of `_lora_forward`'s output for `x` (when needed), `A` and `B`."""
    weight, a, b, low_rank = saved
    grad = grad_output.to(inputs.dtype)
    keep = None
    if ctx.threshold:
        keep = keep_mask(inputs.shape, ctx.threshold, ctx.seed, inputs.dtype, inputs.device, reuse=True)
    scaled = (grad @ b).mul_(ctx.scale)  # (N, r): u, or u/2 against the doubled multipliers
    grad_inputs = None
    if needs_input_grad:
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
    return grad_inputs, grad_a, grad_b


class FusedLoraLinear(torch.autograd.Function):
    """`base(x) + scale · B(A(dropout(x)))` of a plain LoRA layer; the arguments after `x` are `_lora_forward`'s."""

    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, *layer: Any) -> torch.Tensor:
        output, saved = _lora_forward(ctx, inputs, *layer)
        ctx.save_for_backward(inputs, *saved)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        inputs, *saved = ctx.saved_tensors
        grad_inputs, grad_a, grad_b = _lora_backward(
            ctx, grad_output, inputs, tuple(saved), ctx.needs_input_grad[0]
        )
        return grad_inputs, None, None, grad_a, grad_b, None, None, None


class FusedSwiGLULora(torch.autograd.Function):
    """`down(silu(gate) ⊙ up)` for a LoRA `down`, keeping `gate` and `up` but not their product.

    autograd keeps three `(N, intermediate)` tensors per MLP for the activation (gate, silu(gate), up)
    and the LoRA layer a fourth (the product, its input). Here only gate and up are kept: backward
    recomputes silu(gate) and the product (two passes) with the very ops of the forward, so the
    values and gradients are those of `act_fn(gate) * up` followed by the fused layer.
    """

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor, *layer: Any) -> torch.Tensor:
        product = F.silu(gate) * up
        output, saved = _lora_forward(ctx, product, *layer)
        ctx.save_for_backward(gate, up, *saved)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        gate, up, *saved = ctx.saved_tensors
        activated = F.silu(gate)
        grad_product, grad_a, grad_b = _lora_backward(
            ctx, grad_output, activated * up, tuple(saved), needs_input_grad=True
        )
        assert grad_product is not None
        grad_gate = torch.ops.aten.silu_backward(grad_product * up, gate)
        grad_up = grad_product.mul_(activated)
        return grad_gate, grad_up, None, None, grad_a, grad_b, None, None, None


def _scratch_like(tensor: torch.Tensor, name: str) -> torch.Tensor:
    """A scratch buffer shaped like `tensor`, consumed before the next layer asks for `name`."""
    return scratch(name, tensor.numel(), tensor.dtype, tensor.device).view(tensor.shape)
