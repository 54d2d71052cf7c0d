"""`tunesmith train --dry-run`: what a job will take before it runs, and what a budget buys.

Owns: `TrainPlan` (examples, tokens, steps and epochs, memory, the step layout, speed and time) and the
suggestions printed with it. Does not own: the estimates themselves (`plan`, `budget`,
`data.estimate`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.config import TrainSpec
from tunesmith.data.estimate import CHECKPOINTING_SLOWDOWN, estimate_training
from tunesmith.data.ingest import load_split
from tunesmith.data.records import Example
from tunesmith.data.render import render_example
from tunesmith.data.split import held_out_indices
from tunesmith.models.loading import default_device, load_tokenizer, resolve_model
from tunesmith.train.budget import planned_steps
from tunesmith.train.distributed import check_strategy, device_memory
from tunesmith.train.plan import (
    GB,
    StepLayout,
    estimate_throughput,
    model_shape,
    plan_step_layout,
    step_counts,
    step_plan,
    uses_bf16,
)
from tunesmith.train.preference import Group, render_groups
from tunesmith.train.quantized import qlora_shortfall
from tunesmith.train.records import StepPlan
from tunesmith.train.validation import ValidationSource, validation_file


@dataclass(frozen=True)
class TrainPlan:
    """What `tunesmith train --dry-run` reports: size, memory, layout and time of a job before it runs."""

    model: str
    objective: str  # sft, dpo, kto, orpo
    method: str  # lora, full
    device: str
    precision: str
    parameters: int
    trainable_parameters: int
    examples: int
    truncated_examples: int
    tokens_per_epoch: int
    loss_tokens_per_epoch: int
    validation: str  # what the run validates on: a `ValidationSource` value
    validation_examples: int
    budget: str | None  # "20m00s", "1,000,000 tokens": what the steps were planned to fill
    steps: int
    epochs: float  # passes over the training data those steps make
    total_tokens: int
    layout: StepPlan
    processes: int  # `--nproc` times `--nnodes`
    strategy: str | None  # ddp or fsdp (None: one process)
    memory_per_device_gb: dict[str, float]  # the layout's memory as each process's device holds it
    memory_per_device_by_strategy_gb: dict[str, dict[str, float]]  # the same under each strategy that fits
    tokens_per_second: float
    throughput_source: str
    reference_seconds: float  # dpo, kto: scoring the data under the reference before training (0 otherwise)
    estimated_seconds: float  # the whole job, the reference pass included
    suggestions: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_training(
    spec: TrainSpec, measured: Callable[[str, str, str, str], list[float]], processes: int = 1
) -> TrainPlan:
    """Estimate `spec` without training: tokens, steps and epochs (or what its budget buys), memory, the
    step layout and minutes.

    Args:
        spec: the job.
        measured: `(base_model, method, device, precision) -> tokens/s of earlier runs` (the registry's).
        processes: processes that will train it (`--nproc` times `--nnodes`): memory per device for the
            strategy of `spec.distributed`. Time is estimated for one process.
    """
    model_path = resolve_model(spec.model)
    tokenizer = load_tokenizer(model_path)
    data = _sft_data(spec, tokenizer) if spec.method == "sft" else _preference_data(spec, tokenizer)
    lengths, val_tokens = data.lengths, data.val_tokens
    device = default_device()
    bf16 = uses_bf16(spec.precision, device)
    precision = "bf16" if bf16 else "fp32"
    shape = model_shape(model_path, spec.tuning, spec.lora.r, spec.lora.target_modules)
    layout = plan_step_layout(spec, shape, bf16, device, lengths)
    throughput = estimate_throughput(
        shape, spec.tuning, bf16, device, measured(spec.model, spec.tuning, device, precision)
    )
    slowdown = CHECKPOINTING_SLOWDOWN if layout.gradient_checkpointing else 1.0
    steps = planned_steps(spec, lengths, val_tokens, throughput.tokens_per_second * slowdown)
    steps_per_epoch, _ = step_counts(len(lengths), spec)
    total_tokens = round(sum(lengths) * steps / steps_per_epoch)
    job = estimate_training(
        total_tokens, shape.parameters, spec.tuning, throughput, [],
        gradient_checkpointing=layout.gradient_checkpointing,
    )  # fmt: skip
    assert job.throughput is not None and job.seconds is not None  # a dry run always has a throughput
    # DPO and KTO score every sequence once under the reference first: a forward pass, about a third of
    # a training pass (forward and backward) over the same tokens.
    reference_seconds = (
        (sum(lengths) + val_tokens) / (3 * job.throughput.tokens_per_second)
        if spec.method in ("dpo", "kto")
        else 0.0
    )
    seconds = job.seconds + reference_seconds
    truncated = data.truncated
    strategy = check_strategy(spec) if processes > 1 else None
    per_device = device_memory(layout.memory, strategy, processes, shape) if strategy else layout.memory
    # Full fine-tuning may replicate (ddp) or shard (fsdp): both, to choose by.
    strategies = (["ddp", "fsdp"] if spec.tuning == "full" else ["ddp"]) if processes > 1 else []
    by_strategy = {name: device_memory(layout.memory, name, processes, shape).to_gb() for name in strategies}
    return TrainPlan(
        model=spec.model,
        objective=spec.method,
        method=spec.tuning,
        device=device,
        precision=precision,
        parameters=shape.parameters,
        trainable_parameters=shape.trainable,
        examples=len(lengths),
        truncated_examples=truncated,
        tokens_per_epoch=sum(lengths),
        loss_tokens_per_epoch=data.loss_tokens,
        validation=data.validation.value,
        validation_examples=data.val_examples,
        budget=_budget_text(spec),
        steps=steps,
        epochs=round(steps / steps_per_epoch, 2),
        total_tokens=total_tokens,
        layout=step_plan(layout),
        processes=processes,
        strategy=strategy,
        memory_per_device_gb=per_device.to_gb(),
        memory_per_device_by_strategy_gb=by_strategy,
        tokens_per_second=round(job.throughput.tokens_per_second, 1),
        throughput_source=job.throughput.source,
        reference_seconds=_significant(reference_seconds),
        estimated_seconds=_significant(seconds),
        suggestions=_suggestions(spec, layout, truncated, seconds, device),
    )


def _significant(seconds: float) -> float:
    """Four significant figures: a tiny job on a fast machine takes hundredths of a second, and rounding
    to fixed decimals made a DPO plan (reference pass included) read as long as the ORPO one."""
    return float(f"{seconds:.4g}")


@dataclass(frozen=True)
class _Data:
    """What the plan needs of the data: tokens per training example (a preference example's sequences
    together), loss tokens, validation size, examples cut at max_seq_len."""

    lengths: list[int]
    loss_tokens: int
    val_tokens: int
    val_examples: int
    validation: ValidationSource
    truncated: int


def _sft_data(spec: TrainSpec, tokenizer: PreTrainedTokenizerBase) -> _Data:
    examples, val_examples, validation = _splits(spec)
    rendered = [render_example(tokenizer, example, spec.max_seq_len) for example in examples]
    lengths = [len(example.input_ids) for example in rendered]
    val_tokens = sum(len(render_example(tokenizer, e, spec.max_seq_len).input_ids) for e in val_examples)
    return _Data(
        lengths, sum(example.num_loss_tokens for example in rendered), val_tokens, len(val_examples),
        validation, sum(length >= spec.max_seq_len for length in lengths),
    )  # fmt: skip


def _preference_data(spec: TrainSpec, tokenizer: PreTrainedTokenizerBase) -> _Data:
    """As the preference recipe reads it (`render_groups`), with the same held-out split."""
    groups, labels, _ = render_groups(tokenizer, spec, spec.data, "train")
    val_path, validation = validation_file(spec)
    val_groups: list[Group] = []
    if val_path is not None:
        val_groups = render_groups(tokenizer, spec, val_path, "val")[0]
    elif validation is ValidationSource.held_out:
        strata = [str(value) for value in labels.tolist()] if labels is not None else None
        held = set(held_out_indices(len(groups), spec.seed, strata))
        val_groups = [group for index, group in enumerate(groups) if index in held]
        groups = [group for index, group in enumerate(groups) if index not in held]
        validation = validation if held else ValidationSource.none
    trained = groups if spec.method != "kto" else [group[:1] for group in groups]  # KTO's KL pass: no grad
    return _Data(
        [sum(len(sequence.input_ids) for sequence in group) for group in groups],
        sum(sequence.num_loss_tokens for group in trained for sequence in group),
        sum(len(sequence.input_ids) for group in val_groups for sequence in group),
        len(val_groups),
        validation,
        sum(any(len(s.input_ids) >= spec.max_seq_len for s in group) for group in groups),
    )


def _splits(spec: TrainSpec) -> tuple[list[Example], list[Example], ValidationSource]:
    """The examples the run would train and validate on (the same held-out split it would make)."""
    examples, _ = load_split(spec.data, "train", spec.format)
    val_path, validation = validation_file(spec)
    if val_path is not None:
        return examples, load_split(val_path, "val", spec.format)[0], validation
    if validation is ValidationSource.none:
        return examples, [], validation
    labels = [example.label for example in examples if example.label is not None]
    held = set(held_out_indices(len(examples), spec.seed, labels if len(labels) == len(examples) else None))
    train = [example for index, example in enumerate(examples) if index not in held]
    val = [example for index, example in enumerate(examples) if index in held]
    return train, val, validation if held else ValidationSource.none


def _budget_text(spec: TrainSpec) -> str | None:
    """The budget as the user would say it, or None without one."""
    parts = []
    if spec.time_budget is not None:
        minutes, seconds = divmod(round(spec.time_budget), 60)
        parts.append(f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s")
    if spec.token_budget is not None:
        parts.append(f"{spec.token_budget:,} tokens")
    return " and ".join(parts) or None


def _suggestions(
    spec: TrainSpec, layout: StepLayout, truncated: int, seconds: float, device: str
) -> list[str]:
    tips: list[str] = []
    if not layout.fits:
        tips.append(
            f"estimated peak {layout.memory.total / GB:.1f} GB exceeds the {layout.budget / GB:.1f} GB limit: "
            "lower --max-seq-len (rows get shorter)"
            + (
                ", or train a LoRA adapter (--tuning lora) instead of every weight"
                if spec.tuning == "full"
                else ""
            )
            + ", or pick a smaller model"
        )
    elif layout.gradient_checkpointing:
        tips.append(
            "gradient checkpointing is needed to fit; a shorter --max-seq-len or more memory avoids it"
        )
    if truncated:
        tips.append(f"{truncated} example(s) reach --max-seq-len {spec.max_seq_len} and will be truncated")
    if spec.tuning == "qlora" and qlora_shortfall():  # the estimate is for a CUDA machine that can run it
        tips.append(
            f"QLoRA needs a CUDA GPU and bitsandbytes; this machine has {' and '.join(qlora_shortfall())}"
        )
    if not device.startswith("cuda") and seconds > 3600:
        tips.append(
            f"about {seconds / 3600:.1f} h on this CPU: try --max-steps for a first look, or a GPU machine"
        )
    return tips
