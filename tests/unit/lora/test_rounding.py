"""In bf16 a LoRA delta must reach the output even when it is under half a bf16 step of it."""

from __future__ import annotations

import copy

import torch
from peft import LoraConfig, inject_adapter_in_model
from torch import nn

from tunesmith.lora import use_lora_forwards


def _layer_model(names: tuple[str, ...] = ("default",)) -> nn.Module:
    """One 256 -> 128 linear layer with LoRA adapters whose deltas are mostly under half a bf16 step."""
    torch.manual_seed(0)
    model: nn.Module = nn.Sequential(nn.Linear(256, 128, bias=False))
    with torch.no_grad():
        model[0].weight.normal_(0, 0.5)
    for name in names:
        model = inject_adapter_in_model(LoraConfig(r=4, lora_alpha=8, target_modules=["0"]), model, name)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.normal_(0, 6e-4)
    return model.eval()


def _bf16(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(torch.bfloat16)


def test_a_delta_under_half_a_bf16_step_reaches_the_output() -> None:
    model = _bf16(_layer_model())
    x = torch.randn(256, 256).bfloat16()
    layer = model[0]
    with torch.no_grad():
        # The exact sums of the bf16 weights and inputs, in fp32: what rounding once would round.
        base_exact = x.float() @ layer.base_layer.weight.float().T
        delta = (
            (x.float() @ layer.lora_A["default"].weight.float().T) @ layer.lora_B["default"].weight.float().T
        ) * 2  # lora_alpha / r
        peft_output = model(x)
        # The failure this module fixes: peft rounds the base output first, and the delta vanishes.
        assert (peft_output == layer.base_layer(x)).float().mean() > 0.9
        assert use_lora_forwards(model, fused=False, fast_dropout=False).layers == 1
        exact = model(x)

    def kept(output: torch.Tensor) -> float:  # the share of the delta the output carries
        return float(((output.float() - base_exact) * delta).sum() / delta.square().sum())

    assert kept(peft_output) < 0.3  # most of it lost
    assert 0.8 < kept(exact) < 1.2  # all of it, to within bf16's rounding noise


def test_fp32_layers_and_training_keep_peft_forward() -> None:
    model = _layer_model()
    x = torch.randn(8, 256)
    with torch.no_grad():
        reference = model(x)
        use_lora_forwards(model, fused=False, fast_dropout=False)
        assert torch.equal(model(x), reference)  # fp32: peft's own forward, bit for bit
        bf16 = _bf16(_layer_model()).train()  # training mode: peft's forward (dropout, gradients)
        trained_reference = bf16(x.bfloat16())
        use_lora_forwards(bf16, fused=False, fast_dropout=False)
        assert torch.equal(bf16(x.bfloat16()), trained_reference)


def test_mixed_batch_rows_match_each_adapter_alone() -> None:
    model = _bf16(_layer_model(("a", "b")))
    use_lora_forwards(model, fused=False, fast_dropout=False)
    x = torch.randn(3, 5, 256).bfloat16()
    names = ["a", "__base__", "b"]
    with torch.no_grad():
        mixed = model[0](x, adapter_names=names)
        for row, name in enumerate(names):
            if name == "__base__":
                alone = model[0].base_layer(x[row : row + 1])
            else:
                model[0].set_adapter(name)
                alone = model[0](x[row : row + 1])
            torch.testing.assert_close(mixed[row : row + 1], alone, rtol=0, atol=0.02, msg=name)


def test_weights_changed_in_place_are_seen_by_the_next_inference() -> None:
    """Frozen adapters' cast weights are kept between calls; a change in place must still be seen."""
    model = _layer_model().requires_grad_(False)  # an adapter loaded for inference:
    model[0].base_layer.to(torch.bfloat16)  # a bf16 base, fp32 adapters, as peft loads them
    use_lora_forwards(model, fused=False, fast_dropout=False)
    x = torch.randn(4, 256).bfloat16()
    with torch.no_grad():
        before = model(x)
        model[0].lora_B["default"].weight.add_(0.05)
        after = model(x)
        fresh = copy.deepcopy(model)
        fresh[0].__dict__.pop("_tunesmith_low_rank", None)  # nothing kept from earlier calls
        assert not torch.equal(after, before)
        assert torch.equal(after, fresh(x))


def test_validation_sees_every_optimizer_step_even_fused_adamw() -> None:
    """Fused AdamW updates weights without bumping their version: trainable adapters are never kept."""
    model = _layer_model()
    model[0].base_layer.to(torch.bfloat16)  # as in training: a bf16 base, fp32 adapters
    use_lora_forwards(model, fused=False, fast_dropout=False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.05, fused=True)
    x = torch.randn(4, 256).bfloat16()
    with torch.no_grad():
        before = model(x)
    for parameter in trainable:
        parameter.grad = torch.ones_like(parameter)
    optimizer.step()
    with torch.no_grad():
        assert not torch.equal(model(x), before)
