"""Supervised fine-tuning, the first objective: `train_sft(spec)`, readable top to bottom.

Owns: the SFT recipe (data → model → loop → artifact) and `SFTObjective`: next-token cross-entropy on
assistant tokens only, over examples packed into dense rows without cross-example attention, taken
from final hidden states without materialising full-vocabulary logits
(`tunesmith.train.losses.linear_cross_entropy`). A step's packed rows are cut into passes of at most
the step plan's tokens (memory-sized, the same sum of gradients). Does not own: the loop
(`tunesmith.train.loop`), the model's setup (`tunesmith.train.model`), the registry (events go to a
listener) or the CLI.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.config import ConfigError, TrainSpec, tunesmith_home
from tunesmith.data.ingest import load_split
from tunesmith.data.pack import PackedBatch, pack_batch
from tunesmith.data.records import Example, dataset_hash
from tunesmith.data.render import IGNORE_INDEX, RenderedExample, render_example
from tunesmith.eval.during_training import evaluate_during_training
from tunesmith.eval.tasks import detect_task, metric_names
from tunesmith.models.loading import default_device, load_tokenizer, resolve_model
from tunesmith.train.budget import budget_speed, planned_steps
from tunesmith.train.distributed import ALONE, Replicas, check_strategy, share_run
from tunesmith.train.finish import TrainedData, finish_run
from tunesmith.train.fsdp import ShardedGroup, gather_for_saving, shard_training_model
from tunesmith.train.loop import LoopSettings, Score, ValidationHook, fit
from tunesmith.train.losses import linear_cross_entropy
from tunesmith.train.model import LoraSettings, TrainingModel, prepare_training_model
from tunesmith.train.plan import (
    model_shape,
    plan_step_layout,
    step_plan,
    uses_bf16,
    uses_packed_attention,
)
from tunesmith.train.quantized import require_qlora
from tunesmith.train.records import StepPlan, TrainResult, read_step_plan
from tunesmith.train.rundir import EventListener, EventType, RunDir, open_run, recording_outcome
from tunesmith.train.validation import ValidationSource, hold_out, validation_file


def train_sft(
    spec: TrainSpec,
    *,
    listener: EventListener | None = None,
    resume: Path | None = None,
    progress: bool = True,
    on_validation: ValidationHook | None = None,
    replicas: Replicas = ALONE,
) -> TrainResult:
    """Fine-tune `spec.model` on `spec.data`; resume the run folder `resume` from its last checkpoint.

    Returns the run's summary (also written to `run.json`). Raises on bad data or config, after
    recording a `failed` event; Ctrl-C records `cancelled` and leaves the run resumable. `on_validation`
    may stop the run after a validation (a study pruning its trial). `replicas`: the other processes of a
    `--nproc` run, each calling this (rank 0 writes the run folder).
    """
    if spec.tuning == "qlora":  # before anything is loaded or written
        require_qlora()
    config = spec.model_dump(mode="json")
    run = share_run(replicas, lambda: open_run(
        config, out=spec.out, runs_root=tunesmith_home() / "runs", resume=resume, listener=listener
    ))  # fmt: skip
    with recording_outcome(run):
        return _train(spec, run, resume is not None, progress, on_validation, replicas)


def _train(
    spec: TrainSpec,
    run: RunDir,
    resuming: bool,
    show_progress: bool,
    on_validation: ValidationHook | None,
    replicas: Replicas,
) -> TrainResult:
    seed_everything(spec.seed)
    # ------------------------------------------------------------------ data
    run.emit(EventType.validating_data, "reading and rendering the data")
    model_path = resolve_model(spec.model)
    if spec.lr is None:  # the default depends on the model's size
        shape = model_shape(model_path, spec.tuning, spec.lora.r, spec.lora.target_modules)
        spec = spec.model_copy(update={"lr": spec.resolved_lr(shape.parameters)})
    tokenizer = load_tokenizer(model_path)
    train_raw, train_hash, val_raw, val_hash, validation = _read_splits(run, spec)
    train_examples = _render(run, tokenizer, train_raw, spec)
    val_examples = _render(run, tokenizer, val_raw, spec)
    val_sample = _metric_sample(spec, val_raw)

    # ------------------------------------------------------------------ model
    device = default_device()
    bf16 = uses_bf16(spec.precision, device)
    plan = replicas.agree(choose_step_plan(run, spec, model_path, bf16, device, train_examples, resuming))
    if spec.init_adapter is not None:
        from tunesmith.train.preference import check_init_adapter  # preference imports this module

        check_init_adapter(spec.init_adapter, spec.model, model_path)
    lora = spec.lora
    trained = prepare_training_model(
        model_path,
        lora=LoraSettings(lora.r, lora.alpha, lora.dropout, lora.target_modules)
        if spec.tuning != "full"
        else None,
        bf16=bf16,
        device=device,
        fused_layers=plan.fused_layers,
        packed_attention=uses_packed_attention(device, spec.compile),
        gradient_checkpointing=plan.gradient_checkpointing,
        compile_decoder=spec.compile,
        quantized=spec.tuning == "qlora",
        init_adapter=spec.init_adapter,
    )
    if replicas.world_size > 1:  # the same adapter initialised everywhere; each process its own dropout draws
        torch.manual_seed(spec.seed + 7919 * replicas.rank)
    if replicas.world_size > 1 and check_strategy(spec) == "fsdp":  # full fine-tuning, weights sharded
        trained, replicas = shard_training_model(trained, replicas)

    # ------------------------------------------------------------------ loop
    objective = SFTObjective(
        trained,
        train_examples,
        val_examples,
        spec.batch_size,
        spec.pack_len,
        tokenizer.pad_token_id,
        plan.pass_tokens,
    )
    score: Score | None = None
    if spec.eval_metrics:  # task metrics on a validation sample, beside the loss
        score = partial(evaluate_during_training, trained.model, tokenizer, val_sample, spec.eval_metrics)
    lengths = [len(example.input_ids) for example in train_examples]
    speed = budget_speed(spec, model_path, bf16, device, plan)
    steps = planned_steps(spec, lengths, sum(len(example.input_ids) for example in val_examples), speed)
    steps = replicas.agree(steps)  # a time budget plans from a speed each process measured
    settings = loop_settings(spec, len(train_examples), steps)
    started = (
        f"training {steps_message(spec, steps, speed)} on {devices(device, replicas)} "
        f"({'bf16' if bf16 else 'fp32'}), passes of "
        f"{plan.pass_tokens} tokens, gradient checkpointing {'on' if plan.gradient_checkpointing else 'off'}",
        {"layout": plan.to_dict(), "planned_steps": steps, "processes": replicas.world_size},
    )
    outcome = fit(
        trained.model, objective, settings, run,
        device=device, resuming=resuming, started=started, score=score,
        show_progress=show_progress and run.writes, on_validation=on_validation, replicas=replicas,
    )  # fmt: skip

    # ------------------------------------------------------------------ save
    data = TrainedData(train_hash, val_hash, len(train_examples), len(val_examples), validation)
    if isinstance(replicas, ShardedGroup):  # gathered whole in rank 0, saved as one process saves it
        trained = gather_for_saving(trained, model_path, replicas)
    return replicas.on_main(lambda: finish_run(
        run, trained, tokenizer, outcome,
        method=spec.tuning, base_model=spec.model, hyperparameters=hyperparameters(spec), data=data, plan=plan,
    ))  # fmt: skip


@dataclass(frozen=True)
class SFTPass:
    """Rows of a packed micro-batch run in one forward/backward pass."""

    batch: PackedBatch
    rows: slice
    num_tokens: int  # real tokens of these rows
    count: int  # their loss-bearing tokens


@dataclass(frozen=True)
class SFTObjective:
    """Cross-entropy on assistant tokens, summed over packed examples (`tunesmith.train.loop.Objective`)."""

    model: TrainingModel
    train_examples: list[RenderedExample]
    val_examples: list[RenderedExample]
    batch_size: int  # examples per packed micro-batch
    pack_len: int  # tokens per packed row
    pad_id: int
    pass_tokens: int  # most tokens per forward/backward pass (the step plan's)

    def step_batches(self, examples: list[int]) -> list[SFTPass]:
        passes: list[SFTPass] = []
        for start in range(0, len(examples), self.batch_size):
            batch = self._pack([self.train_examples[i] for i in examples[start : start + self.batch_size]])
            rows, width = batch.input_ids.shape
            per_pass = max(1, self.pass_tokens // width)
            passes.extend(_pass(batch, slice(first, first + per_pass)) for first in range(0, rows, per_pass))
        return passes

    def validation_batches(self) -> list[SFTPass]:
        return [
            _pass(self._pack(self.val_examples[start : start + self.batch_size]), slice(None))
            for start in range(0, len(self.val_examples), self.batch_size)
        ]

    def loss(self, batch: SFTPass) -> torch.Tensor:
        hidden, targets = self.model.hidden_states(batch.batch, batch.rows)
        loss_sum, _ = linear_cross_entropy(
            hidden, self.model.head_weight, targets, compute_dtype=self.model.compute_dtype
        )
        return loss_sum

    def _pack(self, examples: list[RenderedExample]) -> PackedBatch:
        """Rows of `pack_len` tokens, widened to the longest example when one is longer."""
        return pack_batch(examples, max(self.pack_len, *(len(e.input_ids) for e in examples)), self.pad_id)


def _pass(batch: PackedBatch, rows: slice) -> SFTPass:
    count = int((batch.targets[rows] != IGNORE_INDEX).sum())
    return SFTPass(batch, rows, sum(batch.row_tokens[rows]), count)


# ---------------------------------------------------------------------- helpers


def devices(device: str, replicas: Replicas) -> str:
    """Where a run trains, as its `running` event says it."""
    if replicas.world_size == 1:
        return device
    return f"{replicas.world_size} processes ({device}, {'fsdp' if replicas.shards_weights else 'ddp'})"


def loop_settings(spec: TrainSpec, num_examples: int, total_steps: int) -> LoopSettings:
    return LoopSettings(
        num_examples=num_examples,
        examples_per_step=spec.batch_size * spec.grad_accum,
        total_steps=total_steps,
        seed=spec.seed,
        lr=spec.resolved_lr(),
        weight_decay=spec.weight_decay,
        warmup_ratio=spec.warmup_ratio,
        max_grad_norm=spec.max_grad_norm,
        log_every=spec.log_every,
        eval_every=spec.eval_every,
        save_every=spec.save_every,
        keep_checkpoints=spec.keep_checkpoints,
        early_stopping_patience=spec.early_stopping_patience,
        select_by=spec.select_by,
        time_budget=spec.time_budget,
        max_steps=spec.max_steps,
    )


def steps_message(spec: TrainSpec, steps: int, speed: float | None) -> str:
    """What the `running` event says of the steps: their count, and what a budget made of them."""
    if spec.time_budget is not None:
        assert speed is not None
        return (
            f"to a {spec.time_budget:.0f}s budget (about {steps} steps at an estimated {speed:,.0f} tokens/s; "
            "planned again from each step's time)"
        )
    if spec.token_budget is not None:
        return f"{steps} steps (a budget of {spec.token_budget:,} tokens)"
    return f"{steps} steps"


def choose_step_plan(
    run: RunDir,
    spec: TrainSpec,
    model_path: str,
    bf16: bool,
    device: str,
    examples: list[RenderedExample],
    resuming: bool,
) -> StepPlan:
    """Tokens per pass and checkpointing, chosen once per run (plan.json) so a resumed run steps the same."""
    if resuming and (run.path / "plan.json").is_file():
        return read_step_plan(run.path / "plan.json")
    shape = model_shape(model_path, spec.tuning, spec.lora.r, spec.lora.target_modules)
    plan = step_plan(plan_step_layout(spec, shape, bf16, device, [len(e.input_ids) for e in examples]))
    run.write_json("plan.json", plan.to_record())
    if not plan.fits:
        run.emit(
            EventType.warning,
            f"estimated peak memory {plan.memory_gb['total']} GB exceeds the limit of "
            f"{plan.budget_gb} GB; lower pack_len/max_seq_len or see `tunesmith train --dry-run`",
        )
    return plan


def _metric_sample(spec: TrainSpec, val_examples: list[Example]) -> list[Example]:
    """The validation examples task metrics are scored on during training (none without eval_metrics)."""
    if not spec.eval_metrics:
        return []
    if not val_examples:
        raise ConfigError(
            "train.eval_metrics: task metrics during training need validation data (val_data, or the examples "
            "held out of the training data unless --no-val)"
        )
    sample = val_examples[: spec.eval_samples]
    # Unknown or inapplicable metric names fail here, before training, not at the first validation.
    metric_names(detect_task(sample), spec.eval_metrics)
    return sample


def _read_splits(
    run: RunDir, spec: TrainSpec
) -> tuple[list[Example], str, list[Example], str | None, ValidationSource]:
    """The training and validation examples, each file's content hash, and where validation came from.

    Without validation data, a share of the training examples is held out (stratified by label) unless
    `hold_out_val` is off.
    """
    train, prepared_hash = load_split(spec.data, "train", spec.format)
    train_hash = prepared_hash or dataset_hash(train)
    val_path, validation = validation_file(spec)
    if val_path is not None:
        val, prepared_val_hash = load_split(val_path, "val", spec.format)
        return train, train_hash, val, prepared_val_hash or dataset_hash(val), validation
    if validation is ValidationSource.held_out:
        labels = [example.label for example in train if example.label is not None]
        train, val, validation = hold_out(
            run, train, labels if len(labels) == len(train) else None, spec.seed
        )
        return train, train_hash, val, None, validation
    return train, train_hash, [], None, validation


def _render(
    run: RunDir, tokenizer: PreTrainedTokenizerBase, examples: list[Example], spec: TrainSpec
) -> list[RenderedExample]:
    """The examples rendered for training, with a warning for those truncated to `max_seq_len`."""
    rendered = [render_example(tokenizer, example, spec.max_seq_len) for example in examples]
    truncated = [
        r.source for r, e in zip(rendered, examples, strict=True) if len(r.input_ids) >= spec.max_seq_len
    ]
    if truncated:
        run.emit(
            EventType.warning,
            f"{len(truncated)} example(s) truncated to {spec.max_seq_len} tokens, e.g. "
            f"{', '.join(truncated[:5])}",
            sources=truncated[:20],
        )
    empty = [r.source for r in rendered if r.num_loss_tokens == 0]
    if empty:
        raise ValueError(
            f"{len(empty)} example(s) keep no assistant tokens after truncation to "
            f"{spec.max_seq_len}: {', '.join(empty[:20])}; raise max_seq_len"
        )
    return rendered


def hyperparameters(spec: TrainSpec) -> dict[str, Any]:
    values: dict[str, Any] = {
        "method": spec.tuning,
        "epochs": spec.epochs,
        "max_steps": spec.max_steps,
        "time_budget": spec.time_budget,
        "token_budget": spec.token_budget,
        "batch_size": spec.batch_size,
        "grad_accum": spec.grad_accum,
        "lr": spec.resolved_lr(),
        "warmup_ratio": spec.warmup_ratio,
        "max_seq_len": spec.max_seq_len,
        "seed": spec.seed,
    }
    if spec.tuning != "full":
        values |= {"lora_r": spec.lora.r, "lora_alpha": spec.lora.alpha, "lora_dropout": spec.lora.dropout}
    return values


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
