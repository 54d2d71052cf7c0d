"""The dispatch table of `tunesmith.lora`: which forward a LoRA layer runs, by mode and configuration."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import Linear as LoraLinear
from torch import nn

import tunesmith.lora
from tunesmith.lora import LoraForwards, use_lora_forwards
from tunesmith.lora import forward as lora_forward
from tunesmith.lora.fused import FusedLoraLinear
from tunesmith.lora.rounding import forward_rounded_once
from tunesmith.models.adapters import add_lora
from tunesmith.models.loading import load_model


def _layer_model(use_dora: bool = False) -> nn.Module:
    """One 16 -> 8 linear layer with a LoRA (or DoRA) adapter; only the adapter trains."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["0"], use_dora=use_dora)
    return inject_adapter_in_model(config, nn.Sequential(nn.Linear(16, 8)))


@pytest.fixture()
def paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths LoRA layer calls took, in order: "fused", "rounded once" or "peft"."""
    taken: list[str] = []
    peft_forward = LoraLinear.forward

    def fused_apply(*args: Any) -> Any:
        taken.append("fused")
        return FusedLoraLinear.apply(*args)  # type: ignore[no-untyped-call]

    def spy_rounded_once(*args: Any) -> torch.Tensor:
        taken.append("rounded once")
        return forward_rounded_once(*args)

    def spy_peft(self: LoraLinear, *args: Any, **kwargs: Any) -> torch.Tensor:
        taken.append("peft")
        return peft_forward(self, *args, **kwargs)

    monkeypatch.setattr(lora_forward, "FusedLoraLinear", types.SimpleNamespace(apply=fused_apply))
    monkeypatch.setattr(lora_forward, "forward_rounded_once", spy_rounded_once)
    monkeypatch.setattr(LoraLinear, "forward", spy_peft)
    return taken


# training, fused, dtype of the model, autocast (bf16) on, DoRA -> the path taken
TABLE = [
    (True, True, torch.float32, False, False, "fused"),
    (True, True, torch.bfloat16, True, False, "fused"),
    (True, False, torch.float32, False, False, "peft"),  # training without fused: peft's
    (False, True, torch.bfloat16, False, False, "rounded once"),  # evaluation in bf16
    (False, False, torch.float32, True, False, "rounded once"),  # bf16 by autocast over an fp32 model
    (False, True, torch.float32, False, False, "peft"),  # fp32 evaluation
    (True, True, torch.float32, False, True, "peft"),  # DoRA: always peft's
    (False, True, torch.bfloat16, False, True, "peft"),
]


@pytest.mark.parametrize(("training", "fused", "dtype", "autocast", "use_dora", "expected"), TABLE)
def test_each_call_takes_its_row_of_the_table(
    paths: list[str],
    training: bool,
    fused: bool,
    dtype: torch.dtype,
    autocast: bool,
    use_dora: bool,
    expected: str,
) -> None:
    model = _layer_model(use_dora).to(dtype).train(training)
    assert use_lora_forwards(model, fused=fused, fast_dropout=False).layers == 1
    x = torch.randn(3, 16, dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        output = model(x)
    assert paths == [expected]
    assert output.shape == (3, 8) and bool(output.isfinite().all())


def test_without_gradients_training_mode_takes_peft(paths: list[str]) -> None:
    model = _layer_model().train()
    use_lora_forwards(model, fused=True, fast_dropout=False)
    with torch.no_grad():
        model(torch.randn(3, 16))
    assert paths == ["peft"]


def test_one_install_serves_training_then_evaluation(paths: list[str]) -> None:
    model = _layer_model().to(torch.bfloat16).train()
    use_lora_forwards(model, fused=True, fast_dropout=False)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    model(x).sum().backward()
    with torch.no_grad():
        model.eval()(x)
    assert paths == ["fused", "rounded once"]


def test_counts_what_it_installed_on_a_tiny_llama(tiny_model_dir: Path) -> None:
    model = add_lora(load_model(str(tiny_model_dir)), 4, 8, 0.1, "all-linear")
    installed = use_lora_forwards(model, fused=True, fast_dropout=True)
    # two layers: seven LoRA linears and an MLP each, two norms each and the final one
    assert installed == LoraForwards(layers=2 * 7, mlps=2, norms=2 * 2 + 1, dropouts=2 * 7)
    unfused = add_lora(load_model(str(tiny_model_dir)), 4, 8, 0.1, "all-linear")
    assert use_lora_forwards(unfused, fused=False, fast_dropout=False) == LoraForwards(2 * 7, 0, 0, 0)


def test_public_api_is_pinned() -> None:
    assert tunesmith.lora.__all__ == ["LoraForwards", "use_lora_forwards"]
