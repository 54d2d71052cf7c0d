"""LoRA inference in bf16 (or fp16) that adds each adapter's delta before the output is rounded, not after.

Owns: `linear_with_delta`, a frozen linear layer's output plus a delta rounded once, and
`forward_rounded_once`, a peft `lora.Linear`'s inference forward built on it. Does not own: which
calls take it (`tunesmith.lora.forward`: not training, bf16/fp16 compute, plain LoRA on a linear base).

Why: peft (and a plain `base(x) + delta`) rounds twice in bf16: the base layer's output is rounded to
bf16 first, then the delta is added and the sum rounded again. A delta smaller than half a bf16 step
of the output (about 0.2% of it) is lost outright, not just rounded: early in training, or for a
gentle adapter, that is much of what the adapter changed. Measured on the embedded SmolLM2-135M after
6 LoRA steps, a quarter of the adapter's validation-loss gain was gone in bf16 through peft and
none rounded once here; TRL's SFTTrainer evaluates through peft and reports the bf16 loss (figures:
benchmarks/RESULTS.md, "LoRA layers").

`torch.addmm(delta, x, Wᵀ)` accumulates x·Wᵀ in fp32 and adds the delta there, rounding once (oneDNN on
CPUs, cuBLAS on GPUs), at the cost of the base matmul's. fp32 layers keep peft's own forward: their
second rounding is at 2⁻²⁴ and changes nothing a user could see. Training steps do not use this:
their forward (`tunesmith.lora.fused`) keeps the faster `linear` + in-place add (the in-place
`addmm_` into the delta ran the base matmul slower), and trains the same adapter; what it changes is
what validation, evaluation and serving see. Used through `tunesmith.lora.forward` by training's
validation and evaluation, and by `tunesmith.lora.stacked` (served bf16 rows). Cost: a few percent
on greedy generation, as `addmm` runs a few-row matmul slower than `linear` (RESULTS.md); the
adapters' bf16 casts are kept between calls (`_low_rank`).
"""

from __future__ import annotations

from typing import Any, cast

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

ROUNDED_DTYPES = frozenset({torch.bfloat16, torch.float16})  # where rounding twice loses deltas
BASE_ROWS = "__base__"  # peft's name, in `adapter_names`, for rows on the bare base model
_CACHE = "_tunesmith_low_rank"  # a layer attribute: its adapters' weights cast for inference


def linear_with_delta(inputs: torch.Tensor, layer: nn.Linear, delta: torch.Tensor) -> torch.Tensor:
    """`layer(inputs) + delta`, the sum rounded once; `delta` has the output's shape and the inputs' dtype."""
    flat = inputs.reshape(-1, inputs.shape[-1])
    weight = layer.weight.to(flat.dtype)
    bias_and_delta = delta.reshape(-1, weight.shape[0])
    if layer.bias is not None:
        bias_and_delta = bias_and_delta + layer.bias.to(flat.dtype)
    return torch.addmm(bias_and_delta, flat, weight.T).view(*inputs.shape[:-1], weight.shape[0])


def _base(layer: LoraLinear) -> nn.Linear:
    return cast(nn.Linear, layer.get_base_layer())


def _low_rank(layer: LoraLinear, name: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapter `name`'s `A` (r, in) and `scaling · Bᵀ` (r, out) in `dtype`.

    For frozen adapters (inference) without gradients they are cast once and kept on the layer until
    either weight is replaced or changed in place (which bumps the tensor's version): casting them at
    every call cost more than the two small matmuls themselves in a decode step. Trainable adapters
    (validation during training) are cast at every call: fused AdamW updates weights without bumping
    their version.
    """
    a = cast(torch.Tensor, layer.lora_A[name].weight)
    b = cast(torch.Tensor, layer.lora_B[name].weight)
    scaling = layer.scaling[name]
    if torch.is_grad_enabled() or a.requires_grad or b.requires_grad:  # differentiable, as peft's forward
        return a.to(dtype), (b.T * scaling).to(dtype)
    key = (dtype, scaling, a._version, b._version, a.data_ptr(), b.data_ptr())
    kept: dict[str, tuple[Any, torch.Tensor, torch.Tensor]] = layer.__dict__.setdefault(_CACHE, {})
    entry = kept.get(name)
    if entry is None or entry[0] != key:
        entry = kept[name] = (key, a.detach().to(dtype), (b.detach().T * scaling).to(dtype).contiguous())
    return entry[1], entry[2]


def _delta(layer: LoraLinear, name: str, inputs: torch.Tensor) -> torch.Tensor:
    """Adapter `name`'s `scaling · B(A(x))` in the inputs' dtype (its matmuls accumulate in fp32)."""
    a, scaled_b = _low_rank(layer, name, inputs.dtype)
    return (inputs @ a.T) @ scaled_b


def forward_rounded_once(
    layer: LoraLinear, x: torch.Tensor, dtype: torch.dtype, names: list[str] | None
) -> torch.Tensor:
    """`layer(x)` in `dtype` (bf16 or fp16) with its adapters' delta added before the sum is rounded.

    Args:
        layer: A layer whose base is a plain `nn.Linear` and whose adapters in use are plain LoRA.
        x: The layer's input; cast to `dtype`.
        dtype: The compute dtype of the call.
        names: peft's `adapter_names` of a mixed batch (row i through adapter `names[i]`); None: the
            layer's active adapters for every row.
    """
    inputs = x.to(dtype)
    base = _base(layer)
    with torch.autocast(device_type=x.device.type, enabled=False):
        active = [name for name in layer.active_adapters if name in layer.lora_A] if names is None else []
        if len(active) == 1:  # the common case: one delta, no zeros to start from
            return linear_with_delta(inputs, base, _delta(layer, active[0], inputs))
        delta = inputs.new_zeros(*inputs.shape[:-1], base.out_features)
        for name in active:
            delta += _delta(layer, name, inputs)
        if names is not None:  # a mixed batch: row i through adapter names[i] (peft's `adapter_names`)
            for name in set(names) - {BASE_ROWS}:
                if name in layer.lora_A:
                    rows = [index for index, row_name in enumerate(names) if row_name == name]
                    delta[rows] += _delta(layer, name, inputs[rows])
        return linear_with_delta(inputs, base, delta)
