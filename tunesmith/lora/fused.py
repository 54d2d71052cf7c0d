"""A LoRA linear layer's training forward and backward as one autograd function (CPU and CUDA).

Owns: `use_fused_lora`, which gives each plain peft `lora.Linear` of a model a training forward that
computes `base(x) + scaling · B(A(dropout(x)))` in one `torch.autograd.Function`.

Why: peft's forward is general, and on a CPU its generality is most of a LoRA layer's cost beyond the
base matmul (on a GPU the fused function's gain is mostly memory: 4.8 against 7.9 GB for batches of
32 GSM8K examples on SmolLM2-135M). Under bf16 autocast peft casts the input to fp32 for the adapter
(a copy the size of the input), applies dropout in fp32, casts back to bf16 for `A`, scales the `B`
output and adds it in two more passes, and autograd mirrors every one of those in backward. Saved for
backward per layer: the dropped fp32-then-bf16 input and the mask, 3 bytes per input element. Here, in
the compute dtype:

    forward   y = x·Wᵀ;  t = (x ⊙ keep)·Aᵀ;  y += (s/(1-p)) · t·Bᵀ          (the add fused into addmm)
    backward  u = (s/(1-p)) · g·B;  dx = g·W + keep ⊙ (u·A);  dA = uᵀ·(x ⊙ keep);  dB = (s/(1-p)) · gᵀ·t

Saved: `x` (the same tensor the base layer would keep, shared by q/k/v), `t` (rank-sized) and the
dropout mask's seed: `keep` is redrawn from it in backward (`tunesmith.lora.dropout.keep_mask`),
which costs less than holding a mask per layer costs memory. The mask is drawn as `FastDropout`
draws it, so with the same random state the result equals peft's layer with `FastDropout`.
Gradients reach `A` and `B` only: the base is frozen.

A SwiGLU MLP whose `down_proj` is such a layer runs `down(silu(gate) ⊙ up)` as one function too
(`_FusedSwiGLULora`): it keeps gate and up and recomputes silu(gate) and the product in backward,
where autograd keeps all four `(tokens, intermediate)` tensors (plus peft's mask of the product).
Per token and layer of SmolLM2-135M that is 6 KB less kept (754 -> 564 MB for a 1,030-token pass,
weights aside), for ~1% more time; it is what lets a whole batch run as one pass.

Applies where it is exact: training mode, gradients on, one active adapter, unmerged, plain LoRA (no
DoRA or other variant, no LoRA bias, no fan-in-fan-out base), frozen `nn.Linear` base, CPU or CUDA
tensors. Anything else takes peft's own forward, so evaluation and generation are untouched. On CUDA
the mask's lanes come from torch's Philox generator seeded with the same seed (see `keep_mask`).
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from transformers.activations import SiLUActivation

from tunesmith.lora.dropout import FastDropout, keep_mask, new_seed, scratch
from tunesmith.lora.kernels import FUSED_DEVICES
from tunesmith.lora.rounding import exact_lora_forward


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


# MLP classes whose forward is exactly `down_proj(act_fn(gate_proj(x)) * up_proj(x))`.
SWIGLU_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "SmolLM3MLP"})


class _FusedLoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, *layer: Any) -> torch.Tensor:  # type: ignore[override]
        output, saved = _lora_forward(ctx, inputs, *layer)
        ctx.save_for_backward(inputs, *saved)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        inputs, *saved = ctx.saved_tensors
        grad_inputs, grad_a, grad_b = _lora_backward(
            ctx, grad_output, inputs, tuple(saved), ctx.needs_input_grad[0]
        )
        return grad_inputs, None, None, grad_a, grad_b, None, None, None


class _FusedSwiGLULora(torch.autograd.Function):
    """`down(silu(gate) ⊙ up)` for a LoRA `down`, keeping `gate` and `up` but not their product.

    autograd keeps three `(N, intermediate)` tensors per MLP for the activation (gate, silu(gate), up)
    and the LoRA layer a fourth (the product, its input). Here only gate and up are kept: backward
    recomputes silu(gate) and the product (two passes) with the very ops of the forward, so the
    values and gradients are those of `act_fn(gate) * up` followed by the fused layer.
    """

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, up: torch.Tensor, *layer: Any) -> torch.Tensor:  # type: ignore[override]
        product = F.silu(gate) * up
        output, saved = _lora_forward(ctx, product, *layer)
        ctx.save_for_backward(gate, up, *saved)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
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


def _dropout_parts(dropout: nn.Module) -> tuple[float, int] | None:
    """`(scale, threshold)` of a LoRA dropout module in training: FastDropout's lanes; None if unknown."""
    if isinstance(dropout, nn.Identity):
        return 1.0, 0
    if isinstance(dropout, FastDropout | nn.Dropout):
        fast = dropout if isinstance(dropout, FastDropout) else FastDropout(dropout.p)
        return fast.scale, fast.threshold
    return None


def _applies(layer: LoraLinear, inputs: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if args or kwargs or not layer.training or not torch.is_grad_enabled():
        return False
    if inputs.device.type not in FUSED_DEVICES:
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


def _layer_arguments(layer: LoraLinear) -> tuple[Any, ...]:
    """What `_lora_forward` takes after the input, for a layer `_applies` accepted."""
    name = layer.active_adapters[0]
    keep_scale, threshold = _dropout_parts(layer.lora_dropout[name])  # type: ignore[misc]
    base = layer.get_base_layer()
    return (
        base.weight,
        base.bias,
        layer.lora_A[name].weight,
        layer.lora_B[name].weight,
        layer.scaling[name] * keep_scale,
        threshold,
        new_seed() if threshold else 0,  # drawn as FastDropout draws it
    )


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    device = tensor.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else tensor.dtype


def _flat(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.reshape(-1, tensor.shape[-1]).to(dtype)  # a view when already in `dtype`


def _fused_forward(self: LoraLinear, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    if not _applies(self, x, args, kwargs):  # evaluation: rounded once in bf16; else peft's forward
        return exact_lora_forward(self, x, *args, **kwargs)
    with torch.autocast(device_type=x.device.type, enabled=False):
        output = _FusedLoraLinear.apply(_flat(x, _compute_dtype(x)), *_layer_arguments(self))
    return output.view(*x.shape[:-1], output.shape[-1])


def _fused_mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:  # a SWIGLU_MLPS module
    down = self.down_proj
    if not (
        isinstance(down, LoraLinear)
        and isinstance(self.act_fn, SiLUActivation | nn.SiLU)
        and _applies(down, x, (), {})
    ):
        return type(self).forward(self, x)
    gate, up = self.gate_proj(x), self.up_proj(x)  # each fused itself where it applies
    dtype = gate.dtype  # the activation runs in the projections' output dtype, as transformers runs it
    with torch.autocast(device_type=x.device.type, enabled=False):
        output = _FusedSwiGLULora.apply(_flat(gate, dtype), _flat(up, dtype), *_layer_arguments(down))
    return output.view(*x.shape[:-1], output.shape[-1])


def use_fused_lora(model: nn.Module) -> int:
    """Give every peft `lora.Linear` of `model` the fused training forward; returns how many.

    Also gives each SwiGLU MLP (Llama, Mistral, Qwen2/3, SmolLM3) whose `down_proj` is such a layer
    the forward of `_FusedSwiGLULora`. Layers whose configuration it does not cover keep peft's
    (and transformers') forward at call time (see the module doc).
    """
    fused = 0
    for module in model.modules():
        if isinstance(module, LoraLinear):
            module.forward = types.MethodType(_fused_forward, module)  # type: ignore[method-assign]
            fused += 1
        elif type(module).__name__ in SWIGLU_MLPS:
            module.forward = types.MethodType(_fused_mlp_forward, module)  # type: ignore[method-assign]
    return fused
