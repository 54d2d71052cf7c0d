"""Supervised fine-tuning: `train_sft(spec)`, readable top to bottom (setup → loop → save).

Owns: the training loop and its policy (schedule, validation, early stopping, checkpoints, the
final artifact). The step is built for throughput: examples are packed into dense rows without
cross-example attention, the loss runs only on assistant tokens without materialising full-vocabulary
logits, bf16 is used where the hardware runs it natively, and the host syncs with the device only
when it logs. On a CPU, a pass also runs its rows' tokens end to end with no padding, with the opening
its examples share (a system prompt) computed once (`tunesmith.data.pack.share_prefix`), attention is
computed per example (`tunesmith.models.attention`), and every LoRA layer and frozen RMSNorm is one
fused autograd function (`tunesmith.lora`). Does not own:
the registry (events go to a listener) or the CLI.
"""

from __future__ import annotations

import json
import random
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_cosine_schedule_with_warmup

from tunesmith.config import ConfigError, TrainSpec, tunesmith_home
from tunesmith.data.ingest import is_prepared_dataset, load_split
from tunesmith.data.pack import PackedBatch, pack_batch, share_prefix
from tunesmith.data.records import Example, dataset_hash
from tunesmith.data.render import RenderedExample, render_example
from tunesmith.eval.during_training import evaluate_during_training
from tunesmith.eval.tasks import detect_task, metric_names
from tunesmith.lora import use_lora_forwards
from tunesmith.models.adapters import add_lora, model_card, save_artifact
from tunesmith.models.attention import shared_prefix_kwargs, use_packed_attention
from tunesmith.models.loading import (
    default_device,
    load_model,
    load_tokenizer,
    resolve_model,
)
from tunesmith.train.checkpoint import (
    LoopState,
    list_checkpoints,
    load_checkpoint,
    load_trainable_state,
    save_checkpoint,
    trainable_state,
)
from tunesmith.train.losses import linear_cross_entropy
from tunesmith.train.plan import (
    GB,
    layout_summary,
    model_shape,
    peak_memory_bytes,
    plan_step_layout,
    step_counts,
    uses_bf16,
    uses_packed_attention,
)
from tunesmith.train.plots import plot_loss_curve
from tunesmith.train.progress import TrainProgress
from tunesmith.train.rundir import EventListener, EventType, RunDir, RunStatus, new_run_id


@dataclass
class TrainResult:
    run_id: str
    run_dir: str
    status: str
    method: str
    base_model: str
    artifact_dir: str | None
    steps: int
    trained_tokens: int
    wall_seconds: float
    train_seconds: float
    tokens_per_second: float
    train_loss: float | None
    val_loss: float | None
    best_step: int | None
    data_hash: str
    val_data_hash: str | None
    num_examples: int
    num_val_examples: int
    precision: str
    device: str
    peak_memory_gb: float  # CUDA allocator peak on GPU, process peak RSS on CPU
    micro_batch_tokens: int
    gradient_checkpointing: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def train_sft(
    spec: TrainSpec,
    *,
    listener: EventListener | None = None,
    resume: Path | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune `spec.model` on `spec.data`; resume the run folder `resume` from its last checkpoint.

    Returns the run's summary (also written to `run.json`). Raises on bad data or config, after
    recording a `failed` event; Ctrl-C records `cancelled` and leaves the run resumable.
    """
    # ------------------------------------------------------------------ setup
    run_id = _read_run_id(resume) if resume else new_run_id()
    run_path = resume or spec.out or tunesmith_home() / "runs" / run_id
    run = RunDir(run_path, run_id, listener)
    if resume is None:
        run.path.mkdir(parents=True, exist_ok=True)
        (run.path / "config.yaml").write_text(yaml.safe_dump({"train": spec.model_dump(mode="json")}))
        run.emit(
            EventType.created,
            f"run {run_id} created in {run.path}",
            config=spec.model_dump(mode="json"),
            run_dir=str(run.path),
        )
        _write_status(run, RunStatus.created)
    try:
        return _train(spec, run, resume is not None, progress)
    except KeyboardInterrupt:
        run.emit(EventType.cancelled, "cancelled by the user; resume with `tunesmith train --resume`")
        _write_status(run, RunStatus.cancelled)
        raise
    except Exception as error:
        run.emit(EventType.failed, f"{type(error).__name__}: {error}")
        _write_status(run, RunStatus.failed, error=str(error))
        raise


def _train(spec: TrainSpec, run: RunDir, resuming: bool, show_progress: bool) -> TrainResult:
    _seed_everything(spec.seed)
    run.emit(EventType.validating_data, "reading and rendering the data")
    model_path = resolve_model(spec.model)
    tokenizer = load_tokenizer(model_path)
    train_examples, train_hash, _ = _render_split(run, tokenizer, spec.data, "train", spec)
    # A prepared dataset folder brings its own validation split.
    val_source = spec.val_data or (spec.data if is_prepared_dataset(spec.data) else None)
    val_examples, val_hash, val_raw = (
        _render_split(run, tokenizer, val_source, "val", spec) if val_source else ([], None, [])
    )
    val_sample = _metric_sample(spec, val_raw)

    device = default_device()
    bf16 = uses_bf16(spec.precision, device)
    autocast: AbstractContextManager[Any] = (
        torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else nullcontext()
    )
    layout = _step_layout(run, spec, model_path, bf16, device, train_examples, resuming)
    # LoRA: the frozen base can live in bf16 (half the memory, no per-step casts); adapters stay fp32.
    # Full fine-tuning keeps fp32 master weights and runs the matmuls under bf16 autocast.
    base_dtype = torch.bfloat16 if bf16 and spec.method == "lora" else torch.float32
    model: Any = load_model(model_path, dtype=base_dtype)
    if spec.method == "lora":
        targets = spec.lora.target_modules
        model = add_lora(model, spec.lora.r, spec.lora.alpha, spec.lora.dropout, targets)
        # Which forward each layer runs when (the table in tunesmith.lora): fused functions in training where
        # chosen with the layout (plan.fused_layer_choices; a plan.json from before the choice: CPU, no
        # compile); FastDropout on CPUs, where the native mask cost a sixth of a bf16 step (CUDA's dropout
        # is a fused kernel); validation in bf16 adds each delta before rounding.
        use_lora_forwards(
            model,
            fused=layout.get("fused_layers", device == "cpu" and not spec.compile),
            fast_dropout=device == "cpu",
        )
    model.to(device)
    # CPU only: CUDA's masked SDPA costs less than a launch per example.
    # Packed attention's plain-int boundaries would make a compiled graph recompile for every batch.
    packed_attention = uses_packed_attention(device, spec.compile)
    if packed_attention:
        use_packed_attention(model)
    if layout["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    decoder = model.get_decoder()  # the transformer body: hidden states, no logits
    if spec.compile:  # row count and width vary per batch: one dynamic graph, not a recompile per shape
        decoder = torch.compile(decoder, dynamic=True)
    head_weight = model.get_output_embeddings().weight
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(  # CUDA: one fused kernel for all parameters, not a few launches each
        parameters, lr=spec.resolved_lr(), weight_decay=spec.weight_decay, fused=device.startswith("cuda")
    )

    steps_per_epoch, total_steps = step_counts(len(train_examples), spec)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, round(spec.warmup_ratio * total_steps), total_steps
    )

    state = LoopState()
    checkpoints = list_checkpoints(run.checkpoints_path)
    if resuming and checkpoints:
        state = load_checkpoint(checkpoints[-1], model, optimizer, scheduler)
        run.truncate_metrics(state.step)
        run.emit(EventType.resumed, f"resumed from step {state.step}", step=state.step)
    run.emit(
        EventType.running,
        f"training {total_steps} steps on {device} ({'bf16' if bf16 else 'fp32'}), passes of "
        f"{layout['pass_tokens']} tokens, gradient checkpointing {'on' if layout['gradient_checkpointing'] else 'off'}",
        layout=layout,
    )
    _write_status(run, RunStatus.running)

    def loss_of(batch: PackedBatch, rows: slice = slice(None)) -> tuple[torch.Tensor, int]:
        if packed_attention:  # attention stays within each example, so rows can run end to end: no padding
            row = share_prefix(*batch.end_to_end(rows))  # the examples' common opening computed once
            input_ids, position_ids, targets = row.input_ids, row.position_ids, row.targets
            boundaries = shared_prefix_kwargs(row)
        else:
            columns = slice(0, batch.width(rows))  # a pass of short rows drops the padding other rows needed
            input_ids, position_ids = batch.input_ids[rows, columns], batch.position_ids[rows, columns]
            targets, boundaries = batch.targets[rows, columns], {}
        with autocast, _attention_backends(device):
            hidden = decoder(
                input_ids=input_ids.to(device),
                position_ids=position_ids.to(device),
                use_cache=False,
                **boundaries,
            ).last_hidden_state
        compute_dtype = torch.bfloat16 if bf16 else torch.float32
        return linear_cross_entropy(hidden, head_weight, targets.to(device), compute_dtype=compute_dtype)

    # ------------------------------------------------------------------ loop
    pad_id = tokenizer.pad_token_id
    loop_start = time.perf_counter()
    # The log window measures optimizer steps only: validation and checkpoint time is not training speed.
    window_loss, window_tokens, window_seconds = torch.zeros((), device=device), 0, 0.0
    train_loss: float | None = None
    last_val_loss: float | None = None
    progress = TrainProgress(total_steps, enabled=show_progress)
    progress.start(state.step)
    model.train()
    while state.step < total_steps:
        step_start = time.perf_counter()
        micro_batches = _micro_batches(train_examples, state.step, steps_per_epoch, spec, pad_id)
        step_loss_tokens = sum(batch.num_loss_tokens for batch in micro_batches)
        step_loss = torch.zeros((), device=device)
        for batch in micro_batches:
            for rows in _passes(batch, layout["pass_tokens"]):  # memory-sized; same sum of gradients
                loss_sum, _ = loss_of(batch, rows)
                (loss_sum / step_loss_tokens).backward()
                step_loss += loss_sum.detach()
            state.trained_tokens += batch.num_tokens
            window_tokens += batch.num_tokens
        torch.nn.utils.clip_grad_norm_(parameters, spec.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        step_seconds = time.perf_counter() - step_start
        state.train_seconds += step_seconds
        window_seconds += step_seconds
        window_loss += step_loss / step_loss_tokens
        epoch = state.step / steps_per_epoch

        if state.step % spec.log_every == 0 or state.step == total_steps:
            steps_in_window = (state.step - 1) % spec.log_every + 1
            train_loss = float(window_loss) / steps_in_window  # the only host sync of the step
            tokens_per_second = window_tokens / window_seconds
            record = {
                "step": state.step,
                "epoch": round(epoch, 4),
                "train_loss": round(train_loss, 6),
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_second": round(tokens_per_second, 1),
                "trained_tokens": state.trained_tokens,
            }
            run.log_metrics(record)
            progress.update(state.step, train_loss, tokens_per_second)
            window_loss, window_tokens, window_seconds = torch.zeros((), device=device), 0, 0.0

        stop = False
        if val_examples and (state.step % spec.eval_every == 0 or state.step == total_steps):
            last_val_loss = _validation_loss(model, val_examples, spec, pad_id, loss_of)
            scores = {
                f"val_{name}": round(value, 6)
                for name, value in (
                    evaluate_during_training(model, tokenizer, val_sample, spec.eval_metrics)
                    if spec.eval_metrics
                    else {}
                ).items()
            }
            run.log_metrics(
                {"step": state.step, "epoch": round(epoch, 4), "val_loss": round(last_val_loss, 6)} | scores
            )
            progress.note_val(last_val_loss)
            # Lower is better: the loss, or a task metric negated.
            score = last_val_loss if spec.select_by == "val_loss" else -scores[f"val_{spec.select_by}"]
            if state.best_score is None or score < state.best_score:
                state.best_score, state.best_val_loss, state.best_step = score, last_val_loss, state.step
                state.evals_without_improvement = 0
                _save_best(run, model)
            else:
                state.evals_without_improvement += 1
            run.emit(
                EventType.metrics,
                f"step {state.step}: val loss {last_val_loss:.4f}"
                + "".join(f", {name} {value:.4f}" for name, value in scores.items()),
                step=state.step,
                train_loss=train_loss,
                val_loss=last_val_loss,
                **scores,
            )
            patience = spec.early_stopping_patience
            if patience is not None and state.evals_without_improvement >= patience:
                run.emit(
                    EventType.early_stopped,
                    f"no improvement in {patience} validations; best step {state.best_step}",
                    step=state.step,
                    best_step=state.best_step,
                )
                stop = True
        if state.step % spec.save_every == 0 and state.step < total_steps and not stop:
            state.loop_seconds += time.perf_counter() - loop_start
            loop_start = time.perf_counter()
            path = save_checkpoint(
                run.checkpoints_path, model, optimizer, scheduler, state, spec.keep_checkpoints
            )
            run.emit(
                EventType.checkpoint,
                f"checkpoint at step {state.step}",
                step=state.step,
                path=str(path),
                train_loss=train_loss,
                val_loss=last_val_loss,
            )
            plot_loss_curve(run.read_metrics(), run.path / "loss_curve.png", title=run.run_id)
        if stop:
            break
    progress.stop()
    state.loop_seconds += time.perf_counter() - loop_start

    # ------------------------------------------------------------------ save
    if state.best_step is not None and state.best_step != state.step:
        load_trainable_state(model, load_file(str(run.path / "best" / "trainable.safetensors")))
        run.emit(EventType.warning, f"keeping the best checkpoint (step {state.best_step}) over the last")
    model.eval()
    artifact_dir = run.path / ("adapter" if spec.method == "lora" else "model")
    val_loss = state.best_val_loss
    metrics = {"train_loss": train_loss, "val_loss": val_loss, "best_step": state.best_step}
    hyperparameters = _hyperparameters(spec)
    card = model_card(
        run_id=run.run_id,
        base_model=spec.model,
        method=spec.method,
        data_hash=train_hash,
        hyperparameters=hyperparameters,
        metrics=metrics,
    )
    if spec.method == "full":
        model.to(torch.float32)
    save_artifact(model, tokenizer, artifact_dir, card)
    plot_loss_curve(run.read_metrics(), run.path / "loss_curve.png", title=run.run_id)
    result = TrainResult(
        run_id=run.run_id,
        run_dir=str(run.path),
        status=RunStatus.succeeded.value,
        method=spec.method,
        base_model=spec.model,
        artifact_dir=str(artifact_dir),
        steps=state.step,
        trained_tokens=state.trained_tokens,
        wall_seconds=round(state.loop_seconds, 3),
        train_seconds=round(state.train_seconds, 3),
        tokens_per_second=round(state.trained_tokens / state.train_seconds, 1)
        if state.train_seconds
        else 0.0,
        train_loss=train_loss,
        val_loss=val_loss,
        best_step=state.best_step,
        data_hash=train_hash,
        val_data_hash=val_hash,
        num_examples=len(train_examples),
        num_val_examples=len(val_examples),
        precision="bf16" if bf16 else "fp32",
        device=device,
        peak_memory_gb=round(peak_memory_bytes(device) / GB, 2),
        micro_batch_tokens=layout["pass_tokens"],
        gradient_checkpointing=layout["gradient_checkpointing"],
    )
    run.write_json("run.json", result.to_dict())
    run.emit(EventType.succeeded, f"saved to {artifact_dir}", **result.to_dict())
    return result


# ---------------------------------------------------------------------- helpers


def _micro_batches(
    examples: list[RenderedExample], step: int, steps_per_epoch: int, spec: TrainSpec, pad_id: int
) -> list[PackedBatch]:
    """The packed micro-batches of optimizer step `step`: a pure function of (seed, step), so resume is exact."""
    epoch, index_in_epoch = divmod(step, steps_per_epoch)
    generator = torch.Generator().manual_seed(spec.seed + epoch)
    order = torch.randperm(len(examples), generator=generator).tolist()
    per_step = spec.batch_size * spec.grad_accum
    chosen = order[index_in_epoch * per_step : (index_in_epoch + 1) * per_step]
    return [
        _pack([examples[i] for i in chosen[start : start + spec.batch_size]], spec.pack_len, pad_id)
        for start in range(0, len(chosen), spec.batch_size)
    ]


def _passes(batch: PackedBatch, pass_tokens: int) -> list[slice]:
    """Row slices of `batch` holding at most `pass_tokens` tokens each (at least one row)."""
    rows, width = batch.input_ids.shape
    per_pass = max(1, pass_tokens // width)
    return [slice(start, start + per_pass) for start in range(0, rows, per_pass)]


def _step_layout(
    run: RunDir,
    spec: TrainSpec,
    model_path: str,
    bf16: bool,
    device: str,
    examples: list[RenderedExample],
    resuming: bool,
) -> dict[str, Any]:
    """Tokens per pass and checkpointing, chosen once per run (plan.json) so a resumed run steps the same."""
    if resuming and (run.path / "plan.json").is_file():
        return run.read_json("plan.json")
    shape = model_shape(model_path, spec.method, spec.lora.r, spec.lora.target_modules)
    layout = plan_step_layout(spec, shape, bf16, device, [len(e.input_ids) for e in examples])
    summary = layout_summary(layout)
    run.write_json("plan.json", summary)
    if not layout.fits:
        run.emit(
            EventType.warning,
            f"estimated peak memory {summary['memory_gb']['total']} GB exceeds the limit of "
            f"{summary['budget_gb']} GB; lower pack_len/max_seq_len or see `tunesmith train --dry-run`",
        )
    return summary


def _pack(examples: list[RenderedExample], pack_len: int, pad_id: int) -> PackedBatch:
    """Rows of `pack_len` tokens, widened to the longest example when one is longer."""
    return pack_batch(examples, max(pack_len, *(len(example.input_ids) for example in examples)), pad_id)


def _attention_backends(device: str) -> AbstractContextManager[Any]:
    """On CUDA, SDPA's flash and memory-efficient kernels (then math), never cuDNN's.

    cuDNN's attention builds a plan for every new sequence shape (measured on an H200: ~1.35 ms of CPU
    per backward call, on a step that was bound by CPU time), and a batch's width follows its longest
    example, so nearly every batch is a new shape.
    """
    if not device.startswith("cuda"):
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


@torch.no_grad()
def _validation_loss(
    model: Any, examples: list[RenderedExample], spec: TrainSpec, pad_id: int, loss_of: Any
) -> float:
    """Token-weighted mean loss over every validation example."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), spec.batch_size):
        batch = _pack(examples[start : start + spec.batch_size], spec.pack_len, pad_id)
        loss_sum, count = loss_of(batch)
        total += float(loss_sum)
        tokens += count
    model.train()
    return total / max(tokens, 1)


def _metric_sample(spec: TrainSpec, val_examples: list[Example]) -> list[Example]:
    """The validation examples task metrics are scored on during training (none without eval_metrics)."""
    if not spec.eval_metrics:
        return []
    if not val_examples:
        raise ConfigError("train.eval_metrics: task metrics during training need validation data (val_data)")
    sample = val_examples[: spec.eval_samples]
    # Unknown or inapplicable metric names fail here, before training, not at the first validation.
    metric_names(detect_task(sample), spec.eval_metrics)
    return sample


def _render_split(
    run: RunDir, tokenizer: PreTrainedTokenizerBase, path: Path, split: str, spec: TrainSpec
) -> tuple[list[RenderedExample], str, list[Example]]:
    """Rendered examples of a data file (or a prepared folder's split), the data's content hash, and
    the examples as read (for task metrics)."""
    examples, prepared_hash = load_split(path, split, spec.format)
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
    return rendered, prepared_hash or dataset_hash(examples), examples


def _save_best(run: RunDir, model: PreTrainedModel) -> None:
    best = run.path / "best"
    best.mkdir(exist_ok=True)
    save_file(trainable_state(model), str(best / ".trainable.tmp"))
    (best / ".trainable.tmp").replace(best / "trainable.safetensors")


def _hyperparameters(spec: TrainSpec) -> dict[str, Any]:
    values: dict[str, Any] = {
        "method": spec.method,
        "epochs": spec.epochs,
        "max_steps": spec.max_steps,
        "batch_size": spec.batch_size,
        "grad_accum": spec.grad_accum,
        "lr": spec.resolved_lr(),
        "warmup_ratio": spec.warmup_ratio,
        "max_seq_len": spec.max_seq_len,
        "seed": spec.seed,
    }
    if spec.method == "lora":
        values |= {"lora_r": spec.lora.r, "lora_alpha": spec.lora.alpha, "lora_dropout": spec.lora.dropout}
    return values


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _read_run_id(run_path: Path) -> str:
    status = run_path / "status.json"
    if not status.is_file():
        raise FileNotFoundError(f"{run_path}: not a tunesmith run folder (no status.json)")
    return str(json.loads(status.read_text(encoding="utf-8"))["run_id"])


def _write_status(run: RunDir, status: RunStatus, error: str | None = None) -> None:
    run.write_json("status.json", {"run_id": run.run_id, "status": status.value, "error": error})
