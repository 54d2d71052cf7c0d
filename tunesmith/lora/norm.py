"""RMSNorm's training forward and backward as one autograd function (CPU and CUDA, frozen weight).

Owns: `use_fused_rms_norm`, which gives each Llama-style RMSNorm of a model (`weight * (x / rms(x))`,
the formula of Llama, Mistral and Qwen2/3; Gemma's `1 + weight` is not it) a training forward that
computes in fp32 and stores in the input dtype in three passes:

    forward   r = 1 / sqrt(mean(x²) + eps)   (one fp32-accumulating norm of x)
              y = w ⊙ (x·r)                    (x·r computed in fp32, written in x's dtype; w in place)
    backward  dx = r·(w⊙g) - x·(r³/D)·⟨w⊙g, x⟩

transformers' module does the same math through autograd in fp32: a copy of x in fp32, a power, a
mean, an rsqrt, two products and a cast, each a pass over the tokens, and it keeps the fp32 copy and
the fp32 normalised values for backward (~3.5 KB per token and norm for SmolLM2's 576 channels against
1.2 KB here). Only `x` (the input, usually kept anyway) and `r` are saved.

Applies in training with gradients on, on CPU or CUDA, when the weight is frozen (LoRA); anything else
takes the model's own forward. Installed by `tunesmith.lora.use_lora_forwards` with `fused=True`.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn

from tunesmith.lora.kernels import FUSED_DEVICES

# Norm classes whose forward is exactly `weight * (x.float() * rsqrt(mean(x²) + eps)).to(x.dtype)`.
LLAMA_STYLE_NORMS = frozenset(
    {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "SmolLM3RMSNorm"}
)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        flat = inputs.reshape(-1, inputs.shape[-1])
        width = flat.shape[1]
        norms = torch.linalg.vector_norm(flat, dim=-1, dtype=torch.float32)  # accumulated in fp32
        rstd = norms.square_().div_(width).add_(eps).rsqrt_()  # (N,)
        output: torch.Tensor = (flat * rstd[:, None]).to(
            flat.dtype
        )  # the product in fp32, rounded once, as transformers
        output.mul_(weight.to(flat.dtype))
        ctx.save_for_backward(flat, weight, rstd)
        return output.view(inputs.shape)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        flat, weight, rstd = ctx.saved_tensors
        grad = grad_output.reshape(flat.shape).to(flat.dtype) * weight.to(flat.dtype)  # w ⊙ g
        dot = torch.linalg.vecdot(grad, flat).float()  # (N,): summed in fp32, rounded to the input dtype
        correction = (rstd.pow(3) * dot / flat.shape[1]).to(flat.dtype)
        grad_inputs = (grad * rstd[:, None]).to(flat.dtype)
        grad_inputs.addcmul_(flat, correction[:, None], value=-1)
        return grad_inputs.view(grad_output.shape), None, None


def _fused_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    weight = self.weight
    if (
        not self.training
        or not torch.is_grad_enabled()
        or weight.requires_grad
        or hidden_states.device.type not in FUSED_DEVICES
    ):
        return type(self).forward(self, hidden_states)  # type: ignore[no-any-return]
    output: torch.Tensor = _RMSNorm.apply(hidden_states, weight, self.variance_epsilon)  # type: ignore[no-untyped-call]
    return output


def use_fused_rms_norm(model: nn.Module) -> int:
    """Give every Llama-style RMSNorm of `model` the fused training forward; returns how many."""
    fused = 0
    for module in model.modules():
        if type(module).__name__ in LLAMA_STYLE_NORMS and hasattr(module, "variance_epsilon"):
            module.forward = types.MethodType(_fused_forward, module)
            fused += 1
    return fused
