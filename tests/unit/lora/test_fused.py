"""The fused LoRA layer must train exactly what peft's layer trains: same outputs, same gradients."""

from __future__ import annotations

import copy
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from peft.tuners.lora import Linear as LoraLinear

from tunesmith.lora import use_lora_forwards
from tunesmith.lora.dropout import keep_mask, use_fast_dropout
from tunesmith.models.adapters import add_lora
from tunesmith.models.loading import load_model

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # CUDA: on a GPU machine


def _lora_model(
    tiny_model_dir: Path, dropout: float, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> Any:
    torch.manual_seed(0)
    model = add_lora(load_model(str(tiny_model_dir), dtype=dtype), 4, 8, dropout, "all-linear").to(device)
    with torch.no_grad():  # peft starts B at zero, which would hide every error in A's gradient
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.1)
    use_fast_dropout(model)
    return model


def _run(
    model: Any, input_ids: torch.Tensor, autocast: bool = False
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout masks on both sides
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(input_ids=input_ids, use_cache=False).logits
    logits.float().square().mean().backward()
    grads = {name: p.grad.cpu() for name, p in model.named_parameters() if p.grad is not None}
    return logits.detach().float().cpu(), grads


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_matches_peft_outputs_and_gradients(tiny_model_dir: Path, dropout: float, device: str) -> None:
    model = _lora_model(tiny_model_dir, dropout, device=device).train()
    input_ids = torch.randint(0, model.config.vocab_size, (2, 9), device=device)
    reference_logits, reference_grads = _run(model, input_ids)
    installed = use_lora_forwards(model, fused=True, fast_dropout=False)
    assert installed.layers == 2 * 7  # every LoRA linear of both layers
    logits, grads = _run(model, input_ids)
    torch.testing.assert_close(logits, reference_logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == reference_grads.keys() and len(grads) == 2 * 2 * 7  # A and B everywhere
    for name, grad in reference_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_matches_peft_under_bf16_autocast_with_a_bf16_base(tiny_model_dir: Path, device: str) -> None:
    """The training configuration: bf16 base, fp32 adapters, bf16 autocast."""
    model = _lora_model(tiny_model_dir, 0.1, dtype=torch.bfloat16, device=device).train()
    input_ids = torch.randint(0, model.config.vocab_size, (2, 9), device=device)
    reference_logits, reference_grads = _run(model, input_ids, autocast=True)
    use_lora_forwards(model, fused=True, fast_dropout=False)
    logits, grads = _run(model, input_ids, autocast=True)
    torch.testing.assert_close(logits, reference_logits, rtol=0.02, atol=0.02)
    for name, grad in reference_grads.items():
        assert grads[name].dtype == torch.float32  # master weights' gradients stay fp32
        # bf16 rounding differs in order of operations; the gradients agree to bf16's precision.
        assert (grads[name] - grad).norm() <= 0.03 * grad.norm() + 1e-6, name


def test_evaluation_and_no_grad_take_peft_path_unchanged(tiny_model_dir: Path) -> None:
    model = _lora_model(tiny_model_dir, 0.3)
    input_ids = torch.randint(0, model.config.vocab_size, (1, 7))
    model.eval()
    with torch.no_grad():
        reference = model(input_ids=input_ids).logits
        use_lora_forwards(model, fused=True, fast_dropout=False)
        assert torch.equal(model(input_ids=input_ids).logits, reference)  # eval: no dropout, same path
        model.train()
        torch.manual_seed(3)
        first = model(input_ids=input_ids).logits
        torch.manual_seed(3)
        assert torch.equal(model(input_ids=input_ids).logits, first)


def test_gradient_checkpointing_redraws_the_same_masks(tiny_model_dir: Path) -> None:
    model = _lora_model(tiny_model_dir, 0.3).train()
    use_lora_forwards(model, fused=True, fast_dropout=False)
    input_ids = torch.randint(0, model.config.vocab_size, (2, 9))
    _, reference = _run(model, input_ids)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _, grads = _run(model, input_ids)
    for name, grad in reference.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("device", DEVICES)
def test_keep_mask_is_a_function_of_its_seed_with_independent_lanes(device: str) -> None:
    shape = (513, 77)
    first = keep_mask(shape, 3277, seed=42, dtype=torch.bfloat16, device=torch.device(device)).cpu()
    assert first.shape == shape and first.dtype == torch.bfloat16
    assert set(first.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(first, keep_mask(shape, 3277, 42, torch.bfloat16, torch.device(device)).cpu())
    other = keep_mask(shape, 3277, 43, torch.bfloat16, torch.device(device)).cpu()
    both_dropped = ((first == 0) & (other == 0)).float().mean().item()
    assert both_dropped == pytest.approx(0.2**2, abs=0.005)  # seeds give independent masks
    large = keep_mask((1000, 1000), 3277, -7, torch.float32, torch.device(device)).cpu().flatten()
    assert (large == 0).float().mean().item() == pytest.approx(3277 / 2**14, abs=0.002)
    per_lane = (large.view(-1, 4) == 0).float().mean(0)  # each 14-bit lane of a 64-bit word
    assert per_lane.tolist() == pytest.approx([0.2] * 4, abs=0.004)
    neighbours = ((large[:-1] == 0) & (large[1:] == 0)).float().mean().item()
    assert neighbours == pytest.approx(0.04, abs=0.002)  # adjacent elements independent


def test_swiglu_mlp_keeps_gate_and_up_for_backward_but_not_their_product(tiny_model_dir: Path) -> None:
    model = _lora_model(tiny_model_dir, 0.3).train()
    input_ids = torch.randint(0, model.config.vocab_size, (2, 9))
    width = model.config.intermediate_size

    def kept_intermediates() -> int:  # distinct (tokens, intermediate) tensors saved for backward
        kept: set[int] = set()

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            if tensor.shape[-1] == width and tensor.numel() == 2 * 9 * width:
                kept.add(tensor.untyped_storage().data_ptr())
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(input_ids=input_ids, use_cache=False)
        return len(kept)

    layers = model.config.num_hidden_layers
    # peft under autograd: gate, silu(gate), up, their product, and the dropout mask of the product
    assert kept_intermediates() == 5 * layers
    use_lora_forwards(model, fused=True, fast_dropout=False)
    assert kept_intermediates() == 2 * layers  # gate and up: the rest is recomputed in backward


def test_evaluation_in_bf16_rounds_each_delta_once(tiny_model_dir: Path) -> None:
    """Validation during training sees what evaluation and serving see (`tunesmith.lora.rounding`)."""
    fused = _lora_model(tiny_model_dir, 0.1, dtype=torch.bfloat16).eval()
    exact = copy.deepcopy(fused)
    use_lora_forwards(fused, fused=True, fast_dropout=False)
    use_lora_forwards(exact, fused=False, fast_dropout=False)
    input_ids = torch.randint(0, fused.config.vocab_size, (2, 9))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fused(input_ids=input_ids).logits, exact(input_ids=input_ids).logits)
        exact.base_model.model.model.layers[0].self_attn.q_proj.forward = types.MethodType(
            LoraLinear.forward, exact.base_model.model.model.layers[0].self_attn.q_proj
        )  # one layer back on peft's forward: the logits move
        assert not torch.equal(fused(input_ids=input_ids).logits, exact(input_ids=input_ids).logits)
