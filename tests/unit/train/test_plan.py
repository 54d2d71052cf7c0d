from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import DEMO
from tunesmith.config import TrainSpec
from tunesmith.models.adapters import add_lora
from tunesmith.models.loading import load_model
from tunesmith.train.dry_run import plan_training
from tunesmith.train.plan import (
    GB,
    ModelShape,
    attention_span,
    batch_geometry,
    choose_step_layout,
    estimate_memory,
    fused_layer_choices,
    model_shape,
    plan_step_layout,
)
from tunesmith.train.sft import train_sft

# SmolLM2-135M's sizes: the layouts below are what a laptop user of the embedded model gets.
SMOLLM2 = ModelShape(
    parameters=134_515_008,
    trainable=4_884_480,
    layers=30,
    heads=9,
    hidden=576,
    intermediate=1536,
    vocab=49152,
)


def test_model_shape_counts_the_parameters_peft_trains(tiny_model_dir: Path) -> None:
    for targets in ("all-linear", ["q_proj", "v_proj"]):
        shape = model_shape(str(tiny_model_dir), "lora", 8, targets)
        model = add_lora(load_model(str(tiny_model_dir)), 8, 16, 0.0, targets)
        assert shape.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert (
            shape.parameters == sum(p.numel() for p in model.base_model.model.parameters()) - shape.trainable
        )
    full = model_shape(str(tiny_model_dir), "full", 8, "all-linear")
    assert full.trainable == full.parameters


def test_memory_grows_with_pass_tokens_and_checkpointing_cuts_activations() -> None:
    small = estimate_memory(SMOLLM2, "lora", False, 256, False, "cpu")
    large = estimate_memory(SMOLLM2, "lora", False, 1024, False, "cpu")
    checkpointed = estimate_memory(SMOLLM2, "lora", False, 1024, True, "cpu")
    assert large.activations == 4 * small.activations
    assert checkpointed.activations < large.activations / 5
    assert estimate_memory(SMOLLM2, "lora", True, 1024, False, "cpu").total < large.total  # bf16 halves
    full = estimate_memory(SMOLLM2, "full", False, 1024, False, "cpu")
    assert full.trainable_state == SMOLLM2.parameters * 12 and full.total > large.total


def test_explicit_attention_probabilities_are_in_the_estimate() -> None:
    """Packed attention keeps an L x L matrix per head for each example of up to 512 tokens."""
    assert attention_span([100, 300]) == (100**2 + 300**2) / 400
    assert attention_span([100, 600]) == 100**2 / 700  # longer examples take SDPA, which keeps none
    plain = estimate_memory(SMOLLM2, "lora", True, 1024, False, "cpu")
    packed = estimate_memory(SMOLLM2, "lora", True, 1024, False, "cpu", attention_span=250.0)
    assert packed.activations - plain.activations == 1024 * 30 * 9 * 250 * 2
    checkpointed = estimate_memory(SMOLLM2, "lora", True, 1024, True, "cpu", attention_span=250.0)
    assert checkpointed.activations < packed.activations / 5  # only the recomputed layer's


def test_cpu_fused_layers_keep_fewer_activations_for_lora_only() -> None:
    plain = estimate_memory(SMOLLM2, "lora", True, 2048, False, "cpu", attention_span=250.0)
    fused = estimate_memory(SMOLLM2, "lora", True, 2048, False, "cpu", 250.0, fused_layers=True)
    attention = 2048 * 30 * 9 * 250 * 2  # unchanged: explicit attention keeps its probabilities either way
    assert (fused.activations - attention) / (plain.activations - attention) == pytest.approx(7 / 13)
    assert fused.weights == plain.weights and fused.loss_buffers == plain.loss_buffers
    full = estimate_memory(SMOLLM2, "full", True, 2048, False, "cpu")
    assert estimate_memory(SMOLLM2, "full", True, 2048, False, "cpu", fused_layers=True) == full


def test_fused_layer_choices_follow_the_device_the_dropout_and_the_switch() -> None:
    assert fused_layer_choices("cpu", compile_model=False, fused_layers="auto", lora_dropout=0.05) == [True]
    assert fused_layer_choices("cuda:0", compile_model=False, fused_layers="auto", lora_dropout=0.0) == [True]
    # CUDA with dropout: peft's layers (faster there) unless the fused ones' memory saving pays.
    assert fused_layer_choices("cuda", compile_model=False, fused_layers="auto", lora_dropout=0.05) == [
        False,
        True,
    ]
    assert fused_layer_choices("cuda", compile_model=False, fused_layers="on", lora_dropout=0.05) == [True]
    assert fused_layer_choices("cpu", compile_model=False, fused_layers="off", lora_dropout=0.0) == [False]
    assert fused_layer_choices("cpu", compile_model=True, fused_layers="on", lora_dropout=0.0) == [False]


def test_cuda_takes_fused_layers_with_dropout_only_where_their_memory_saving_pays() -> None:
    def layout(limit_gb: float, fused_layers: str = "auto") -> Any:
        spec = TrainSpec(
            data=Path("unused.jsonl"), batch_size=32, memory_limit_gb=limit_gb, fused_layers=fused_layers
        )
        return plan_step_layout(spec, SMOLLM2, True, "cuda", [300] * 64)

    roomy = layout(80)
    assert not roomy.fused_layers and roomy.pass_tokens == 11 * 1024  # the whole batch fits either way
    assert layout(80, "on").fused_layers and layout(80, "on").pass_tokens == roomy.pass_tokens
    tight = layout(15)  # peft's layers would split the batch into smaller passes; fused ones would not
    assert tight.fused_layers and tight.pass_tokens == roomy.pass_tokens and not tight.gradient_checkpointing
    assert tight.notes == [
        "fused LoRA layers on: with peft's layers the step would run passes of 7,168 tokens"
    ]
    assert layout(15, "off").pass_tokens == 7 * 1024 and not layout(15, "off").fused_layers


def test_layout_takes_the_largest_pass_that_fits_then_checkpoints_then_says_it_cannot() -> None:
    def layout(budget_gb: float, checkpointing: str = "auto") -> tuple[int, bool, bool]:
        chosen = choose_step_layout(SMOLLM2, "lora", False, "cpu", 256, 8, int(budget_gb * GB), checkpointing)  # type: ignore[arg-type]
        return chosen.pass_tokens, chosen.gradient_checkpointing, chosen.fits

    assert layout(100) == (2048, False, True)  # the CPU cap, here the whole batch (8 rows of 256)
    assert layout(4) == (512, False, True)
    assert layout(2.5) == (256, False, True)
    assert layout(2.0) == (2048, True, True)  # one row no longer fits without checkpointing
    assert layout(1.2) == (256, True, True)
    assert layout(1.2, "off") == (256, False, False)
    assert layout(1.0) == (256, True, False)
    gpu = choose_step_layout(SMOLLM2, "lora", True, "cuda", 256, 64, 80 * GB, "auto")
    assert gpu.pass_tokens == 256 * 64  # on a GPU the whole batch runs in one pass when it fits


def test_batch_geometry_widens_rows_to_the_longest_example() -> None:
    assert batch_geometry([100, 100, 100, 100], 4, 256) == (256, 2)
    assert batch_geometry([246, 6, 10], 2, 256) == (256, 1)  # heaviest batch: 246 + 10 fill one row
    assert batch_geometry([300, 10, 10], 2, 256) == (300, 2)  # a longer example widens every row


def test_split_passes_train_exactly_like_one_pass(tiny_model_dir: Path, tmp_path: Path) -> None:
    results = {}
    # No LoRA dropout: its masks are drawn per pass, so split passes would see other masks.
    for name, tokens in (("one-pass", None), ("row-by-row", 1)):
        spec = TrainSpec(
            model=str(tiny_model_dir), data=DEMO / "val.jsonl", max_steps=3, batch_size=8, lr=5e-3,
            pack_len=64, precision="fp32", micro_batch_tokens=tokens, lora={"dropout": 0.0}, out=tmp_path / name,
        )  # fmt: skip
        result = train_sft(spec, progress=False)
        plan = json.loads((tmp_path / name / "plan.json").read_text())
        assert plan["pass_tokens"] == result.micro_batch_tokens
        results[name] = load_file(str(tmp_path / name / "adapter" / "adapter_model.safetensors"))
    passes = {
        name: json.loads((tmp_path / name / "plan.json").read_text())["pass_tokens"] for name in results
    }
    assert passes["one-pass"] >= 2 * passes["row-by-row"]  # the batch really ran as several passes
    for key, value in results["one-pass"].items():
        torch.testing.assert_close(results["row-by-row"][key], value, rtol=1e-4, atol=1e-6)


def test_plan_counts_the_data_and_estimates_time(tiny_model_dir: Path) -> None:
    spec = TrainSpec(model=str(tiny_model_dir), data=DEMO / "train.jsonl", epochs=2, batch_size=8)
    plan = plan_training(spec, lambda *key: [1000.0, 3000.0, 2000.0])
    # 32 of the 200 examples are held out for validation (no validation data given): 21 steps an epoch
    assert plan.examples == 168 and plan.validation == "held_out" and plan.validation_examples == 32
    assert plan.steps == 42 and plan.epochs == 2.0 and plan.budget is None
    assert plan.total_tokens == 2 * plan.tokens_per_epoch
    assert plan.tokens_per_second == 2000.0  # the median of earlier runs
    assert plan.estimated_seconds == pytest.approx(plan.total_tokens / 2000, abs=0.1)
    assert plan.layout.fits and plan.suggestions == []
    tight = plan_training(spec.model_copy(update={"memory_limit_gb": 0.0001}), lambda *key: [])
    assert not tight.layout.fits
    assert "exceeds" in tight.suggestions[0] and "matmul probe" in tight.throughput_source
