"""The fused RMSNorm must compute what transformers' Llama RMSNorm computes, forward and backward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from tunesmith.lora.norm import use_fused_rms_norm
from tunesmith.models.adapters import add_lora
from tunesmith.models.loading import load_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # CUDA: on a GPU machine


def _input_grad(
    norm: torch.nn.Module, inputs: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    leaf = inputs.clone().requires_grad_()
    output = norm(leaf)
    output.backward(grad)
    assert leaf.grad is not None
    return output.detach().float(), leaf.grad.float()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_matches_transformers_rms_norm(dtype: torch.dtype, tolerance: float, device: str) -> None:
    torch.manual_seed(0)
    norm = LlamaRMSNorm(96, eps=1e-5).to(device, dtype).train()
    norm.weight.requires_grad_(False)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.2)
    inputs = (torch.randn(3, 17, 96) * 4).to(device, dtype)
    grad = torch.randn(3, 17, 96).to(device, dtype)
    reference_output, reference_grad = _input_grad(norm, inputs, grad)
    assert use_fused_rms_norm(norm) == 1
    output, input_grad = _input_grad(norm, inputs, grad)
    torch.testing.assert_close(output, reference_output, rtol=tolerance, atol=tolerance)
    # bf16: the two round at different points; agreement to bf16's precision, relative to the gradient.
    assert (input_grad - reference_grad).norm() <= tolerance * reference_grad.norm()


def test_trainable_norm_weights_keep_transformers_forward_and_get_gradients(tiny_model_dir: Path) -> None:
    """Full fine-tuning trains the norm weights: the fused path (no weight gradient) must step aside."""
    model = load_model(str(tiny_model_dir)).train()
    assert use_fused_rms_norm(model) == 2 * 2 + 1  # two per layer and the final norm
    input_ids = torch.randint(0, model.config.vocab_size, (1, 8))
    model(input_ids=input_ids).logits.sum().backward()
    norm_grads = [p.grad for n, p in model.named_parameters() if "norm" in n]
    assert norm_grads and all(g is not None and g.abs().sum() > 0 for g in norm_grads)


def test_lora_training_gradients_unchanged(tiny_model_dir: Path) -> None:
    torch.manual_seed(0)
    model = add_lora(load_model(str(tiny_model_dir)), 4, 8, 0.0, "all-linear").train()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    input_ids = torch.randint(0, model.config.vocab_size, (2, 9))

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        model(input_ids=input_ids).logits.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    reference = grads()
    assert use_fused_rms_norm(model) == 5
    fused = grads()
    for name, grad in reference.items():
        torch.testing.assert_close(fused[name], grad, rtol=1e-4, atol=1e-6, msg=name)
