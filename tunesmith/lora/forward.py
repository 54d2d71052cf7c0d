"""The forward each LoRA layer runs, chosen per call: the table in `tunesmith.lora`'s doc, as code.

Owns: `use_lora_forwards`, which installs one forward on every peft `lora.Linear` of a model (and, for
fused training, on its SwiGLU MLPs and frozen RMSNorms); the dispatch that forward makes per call;
`is_plain_lora`, the one test of which adapters tunesmith's forwards compute; and `_compute_dtype`,
the dtype a call computes in, shared by the fused and the rounded-once paths. Does not own: the math
of each path (`fused`, `rounding`, `norm`), the dropout mask (`dropout`), or creating, saving and
loading adapters (peft, through `tunesmith.models.adapters`).

The check of a call is made at the call, not at install time: a model is installed once and then
trains, validates in eval mode, evaluates and generates, each call taking the path its mode allows.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any, cast

import torch
from peft.tuners.lora import Linear as LoraLinear
from torch import nn
from transformers.activations import SiLUActivation

from tunesmith.lora.dropout import FastDropout, new_seed, use_fast_dropout
from tunesmith.lora.fused import FusedLoraLinear, FusedSwiGLULora
from tunesmith.lora.kernels import FUSED_DEVICES
from tunesmith.lora.norm import use_fused_rms_norm
from tunesmith.lora.rounding import BASE_ROWS, ROUNDED_DTYPES, forward_rounded_once

# MLP classes whose forward is exactly `down_proj(act_fn(gate_proj(x)) * up_proj(x))`.
SWIGLU_MLPS = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "SmolLM3MLP"})


@dataclass(frozen=True)
class LoraForwards:
    """What `use_lora_forwards` installed: how many modules of each kind."""

    layers: int  # peft `lora.Linear` layers given the per-call dispatch
    mlps: int  # SwiGLU MLPs given the fused MLP forward (fused=True only)
    norms: int  # Llama-style RMSNorms given the fused norm forward (fused=True only)
    dropouts: int  # peft's LoRA `nn.Dropout` modules replaced by `FastDropout` (fast_dropout=True only)


def use_lora_forwards(model: nn.Module, *, fused: bool, fast_dropout: bool) -> LoraForwards:
    """Install tunesmith's forward on every LoRA layer (fused=True: also on SwiGLU MLPs, frozen RMSNorms).

    Which forward runs is then decided at each call by the layer's mode and configuration (the table
    in `tunesmith.lora`'s doc); what a path does not cover runs peft's (or transformers') forward.

    Args:
        model: A model with peft LoRA layers.
        fused: Whether training runs plain LoRA layers, the SwiGLU MLPs over them and frozen RMSNorms as
            fused autograd functions (see `tunesmith.train.plan.fused_layer_choices`).
        fast_dropout: Whether peft's LoRA `nn.Dropout` modules are replaced by `FastDropout` (CPUs: the
            native mask is slow there; CUDA's dropout is already one kernel).
    """
    layers = mlps = 0
    for module in model.modules():
        if isinstance(module, LoraLinear):
            module.forward = functools.partial(_layer_forward, module, fused)  # type: ignore[method-assign]
            layers += 1
        elif fused and type(module).__name__ in SWIGLU_MLPS:
            module.forward = types.MethodType(_mlp_forward, module)
            mlps += 1
    return LoraForwards(
        layers=layers,
        mlps=mlps,
        norms=use_fused_rms_norm(model) if fused else 0,
        dropouts=use_fast_dropout(model) if fast_dropout else 0,
    )


def _layer_forward(
    layer: LoraLinear, fused: bool, x: torch.Tensor, *args: Any, **kwargs: Any
) -> torch.Tensor:
    """The forward of a peft `lora.Linear` once installed: the table's row for this call."""
    if fused and _runs_fused(layer, x, args, kwargs):  # training
        inputs = _flat(x, _compute_dtype(layer, x))  # what the base layer would compute in
        with torch.autocast(device_type=x.device.type, enabled=False):
            output: torch.Tensor = FusedLoraLinear.apply(inputs, *_fused_arguments(layer))  # type: ignore[no-untyped-call]
        return output.view(*x.shape[:-1], output.shape[-1])
    dtype = _rounding_dtype(layer, x, args, kwargs)
    if dtype is not None:  # evaluation and validation in bf16 or fp16
        return forward_rounded_once(layer, x, dtype, kwargs.get("adapter_names"))
    return LoraLinear.forward(layer, x, *args, **kwargs)


def _mlp_forward(self: Any, x: torch.Tensor) -> torch.Tensor:  # a SWIGLU_MLPS module
    down = self.down_proj
    if not (
        isinstance(down, LoraLinear)
        and isinstance(self.act_fn, SiLUActivation | nn.SiLU)
        and _runs_fused(down, x, (), {})
    ):
        return type(self).forward(self, x)  # type: ignore[no-any-return]
    gate, up = self.gate_proj(x), self.up_proj(x)  # each fused itself where it applies
    dtype = gate.dtype  # the activation runs in the projections' output dtype, as transformers runs it
    with torch.autocast(device_type=x.device.type, enabled=False):
        output: torch.Tensor = FusedSwiGLULora.apply(  # type: ignore[no-untyped-call]
            _flat(gate, dtype), _flat(up, dtype), *_fused_arguments(down)
        )
    return output.view(*x.shape[:-1], output.shape[-1])


def is_plain_lora(layer: LoraLinear, name: str) -> bool:
    """Whether adapter `name` of `layer` is plain LoRA, `base(x) + scaling · B(A(x))` on a plain linear base.

    Only such adapters take tunesmith's forwards; DoRA and peft's other variants, a LoRA bias, a
    fan-in-fan-out or non-`nn.Linear` base take peft's.
    """
    return (
        _on_plain_linear(layer)
        and name in layer.lora_A
        and name not in layer.lora_variant
        and not layer.use_dora.get(name, False)
        and not layer.lora_bias.get(name, False)
    )


def _on_plain_linear(layer: LoraLinear) -> bool:
    """Whether `layer`'s base is an `nn.Linear` used as it is stored (not fan-in-fan-out)."""
    return not layer.fan_in_fan_out and type(layer.get_base_layer()) is nn.Linear


def _compute_dtype(layer: LoraLinear, inputs: torch.Tensor) -> torch.dtype:
    """The dtype a call of `layer` computes in: autocast's where it is on, else the base weight's."""
    device = inputs.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return cast(nn.Linear, layer.get_base_layer()).weight.dtype


def _runs_fused(
    layer: LoraLinear, inputs: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> bool:
    """Whether a call takes `FusedLoraLinear`: training with gradients, one plain adapter, a frozen base."""
    if args or kwargs or not layer.training or not torch.is_grad_enabled():
        return False
    if inputs.device.type not in FUSED_DEVICES:
        return False
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return False
    name = layer.active_adapters[0]
    base = layer.get_base_layer()
    return (
        is_plain_lora(layer, name)
        and not base.weight.requires_grad
        and (base.bias is None or not base.bias.requires_grad)
        and _dropout_parts(layer.lora_dropout[name]) is not None
    )


def _rounding_dtype(
    layer: LoraLinear, inputs: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> torch.dtype | None:
    """The bf16/fp16 compute dtype of an inference call `forward_rounded_once` covers; None: it does not."""
    if layer.training or args or set(kwargs) - {"adapter_names"}:
        return None
    if layer.disable_adapters or layer.merged or not _on_plain_linear(layer):
        return None
    dtype = _compute_dtype(layer, inputs)
    if dtype not in ROUNDED_DTYPES:
        return None
    names = kwargs.get("adapter_names")
    used = set(layer.active_adapters) if names is None else set(names) - {BASE_ROWS}
    return dtype if all(is_plain_lora(layer, name) for name in used if name in layer.lora_A) else None


def _dropout_parts(dropout: nn.Module) -> tuple[float, int] | None:
    """`(scale, threshold)` of a LoRA dropout module in training: FastDropout's lanes; None if unknown."""
    if isinstance(dropout, nn.Identity):
        return 1.0, 0
    if isinstance(dropout, FastDropout | nn.Dropout):
        fast = dropout if isinstance(dropout, FastDropout) else FastDropout(dropout.p)
        return fast.scale, fast.threshold
    return None


def _fused_arguments(layer: LoraLinear) -> tuple[Any, ...]:
    """What `FusedLoraLinear` takes after the input, for a layer `_runs_fused` accepted."""
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


def _flat(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.reshape(-1, tensor.shape[-1]).to(dtype)  # a view when already in `dtype`
