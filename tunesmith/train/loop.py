"""The one training loop: `fit(model, objective, settings, run)`, shared by every objective.

Owns: which examples each optimizer step trains on (a pure function of (seed, step), so a resumed run
sees the same ones), the optimizer and learning-rate schedule, gradient clipping, metrics lines and the
progress bar, validation, early stopping, best-checkpoint selection, resumable checkpoints and exact
resume. The host syncs with the device only when it logs. Does not own: what a batch is or how its loss
is computed (an `Objective`, e.g. `tunesmith.train.sft.SFTObjective`), the model's setup
(`tunesmith.train.model`), the run folder's files (`tunesmith.train.rundir`) or the saved artifact.

An objective cuts one step's examples into batches (memory-sized passes) and sums a loss over each;
the loop divides every batch's sum by the count of the whole step (loss tokens for SFT, pairs for
preference objectives), so the gradient is that of the step's mean, however the step was cut.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import torch
from safetensors.torch import load_file, save_file
from transformers import get_cosine_schedule_with_warmup

from tunesmith.train.checkpoint import (
    LoopState,
    list_checkpoints,
    load_latest_checkpoint,
    load_trainable_state,
    save_checkpoint,
    trainable_state,
)
from tunesmith.train.plots import plot_loss_curve
from tunesmith.train.progress import TrainProgress
from tunesmith.train.rundir import EventType, RunDir, RunStatus


class TrainBatch(Protocol):
    """One forward/backward pass of an objective."""

    @property
    def num_tokens(self) -> int: ...  # tokens the pass trains on (throughput counts these)

    @property
    def count(self) -> int: ...  # units its loss is summed over: loss tokens, pairs, examples


BatchT = TypeVar("BatchT", bound=TrainBatch)


class Objective(Protocol[BatchT]):
    """What an objective supplies to the loop: its batches, and a summed loss for each."""

    def step_batches(self, examples: list[int]) -> list[BatchT]:
        """The passes of one optimizer step over training examples `examples` (indices)."""
        ...

    def validation_batches(self) -> list[BatchT]:
        """Every validation pass (empty: the run has no validation)."""
        ...

    def loss(self, batch: BatchT) -> torch.Tensor:
        """The loss of `batch` summed over its `count` units (an fp32 scalar)."""
        ...


@dataclass(frozen=True)
class LoopSettings:
    """The loop's plain arguments, converted from a spec by the recipe that calls `fit`."""

    num_examples: int
    examples_per_step: int
    total_steps: int
    seed: int
    lr: float
    weight_decay: float
    warmup_steps: int
    max_grad_norm: float
    log_every: int
    eval_every: int
    save_every: int
    keep_checkpoints: int
    early_stopping_patience: int | None
    select_by: str  # "val_loss", or a task metric `score` returns (higher is better)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_examples / self.examples_per_step)


@dataclass(frozen=True)
class LoopOutcome:
    state: LoopState  # counters at the end; the model holds the best checkpoint's weights
    train_loss: float | None  # mean over the last logging window


Score = Callable[[], dict[str, float]]  # task metrics of the model as it stands, by name


def step_examples(settings: LoopSettings, step: int) -> list[int]:
    """The training examples of optimizer step `step`: a shuffle per epoch, seeded by (seed, epoch)."""
    epoch, index_in_epoch = divmod(step, settings.steps_per_epoch)
    generator = torch.Generator().manual_seed(settings.seed + epoch)
    order = torch.randperm(settings.num_examples, generator=generator).tolist()
    per_step = settings.examples_per_step
    return order[index_in_epoch * per_step : (index_in_epoch + 1) * per_step]


def fit(
    model: torch.nn.Module,
    objective: Objective[Any],
    settings: LoopSettings,
    run: RunDir,
    *,
    device: str,
    resuming: bool,
    started: tuple[str, dict[str, Any]],
    score: Score | None = None,
    show_progress: bool = True,
) -> LoopOutcome:
    """Train `model`'s trainable parameters on `objective` for `settings.total_steps` optimizer steps.

    `started` is the message and data of the `running` event (what the recipe chose); `score` adds task
    metrics to each validation. Returns with the best validated weights loaded into `model`.
    """
    # ------------------------------------------------------------------ optimizer, schedule, resume
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(  # CUDA: one fused kernel for all parameters, not a few launches each
        parameters, lr=settings.lr, weight_decay=settings.weight_decay, fused=device.startswith("cuda")
    )
    scheduler = get_cosine_schedule_with_warmup(optimizer, settings.warmup_steps, settings.total_steps)
    state = LoopState()
    checkpoints = list_checkpoints(run.checkpoints_path)
    if resuming and checkpoints:
        state, skipped = load_latest_checkpoint(checkpoints, model, optimizer, scheduler)
        for reason in skipped:
            run.emit(EventType.warning, f"skipped a checkpoint that does not read back whole ({reason})")
        run.truncate_metrics(state.step)
        run.emit(EventType.resumed, f"resumed from step {state.step}", step=state.step)
    message, data = started
    run.emit(EventType.running, message, **data)
    run.write_status(RunStatus.running)

    # ------------------------------------------------------------------ loop
    loop_start = time.perf_counter()
    # The log window measures optimizer steps only: validation and checkpoint time is not training speed.
    window_loss, window_tokens, window_seconds = torch.zeros((), device=device), 0, 0.0
    train_loss: float | None = None
    last_val_loss: float | None = None
    validation = objective.validation_batches()
    progress = TrainProgress(settings.total_steps, enabled=show_progress)
    progress.start(state.step)
    model.train()
    while state.step < settings.total_steps:
        step_start = time.perf_counter()
        batches = objective.step_batches(step_examples(settings, state.step))
        step_count = sum(batch.count for batch in batches)
        step_loss = torch.zeros((), device=device)
        for batch in batches:  # memory-sized passes; the same sum of gradients as one
            loss_sum = objective.loss(batch)
            (loss_sum / step_count).backward()
            step_loss += loss_sum.detach()
            state.trained_tokens += batch.num_tokens
            window_tokens += batch.num_tokens
        torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        step_seconds = time.perf_counter() - step_start
        state.train_seconds += step_seconds
        window_seconds += step_seconds
        window_loss += step_loss / step_count
        epoch = round(state.step / settings.steps_per_epoch, 4)

        if state.step % settings.log_every == 0 or state.step == settings.total_steps:
            steps_in_window = (state.step - 1) % settings.log_every + 1
            train_loss = float(window_loss) / steps_in_window  # the only host sync of the step
            tokens_per_second = window_tokens / window_seconds
            run.log_metrics(
                {
                    "step": state.step,
                    "epoch": epoch,
                    "train_loss": round(train_loss, 6),
                    "lr": scheduler.get_last_lr()[0],
                    "tokens_per_second": round(tokens_per_second, 1),
                    "trained_tokens": state.trained_tokens,
                }
            )
            progress.update(state.step, train_loss, tokens_per_second)
            window_loss, window_tokens, window_seconds = torch.zeros((), device=device), 0, 0.0

        stop = False
        if validation and (state.step % settings.eval_every == 0 or state.step == settings.total_steps):
            last_val_loss = _validation_loss(model, objective, validation)
            scores = {f"val_{name}": round(value, 6) for name, value in (score() if score else {}).items()}
            run.log_metrics(
                {"step": state.step, "epoch": epoch, "val_loss": round(last_val_loss, 6)} | scores
            )
            progress.note_val(last_val_loss)
            stop = _select(run, model, state, settings, last_val_loss, scores, train_loss)
        if state.step % settings.save_every == 0 and state.step < settings.total_steps and not stop:
            state.loop_seconds += time.perf_counter() - loop_start
            loop_start = time.perf_counter()
            path = save_checkpoint(
                run.checkpoints_path, model, optimizer, scheduler, state, settings.keep_checkpoints
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

    # ------------------------------------------------------------------ the best weights
    if state.best_step is not None and state.best_step != state.step:
        load_trainable_state(model, load_file(str(run.path / "best" / "trainable.safetensors")))
        run.emit(EventType.warning, f"keeping the best checkpoint (step {state.best_step}) over the last")
    return LoopOutcome(state=state, train_loss=train_loss)


@torch.no_grad()
def _validation_loss(model: torch.nn.Module, objective: Objective[Any], batches: list[Any]) -> float:
    """The mean loss over every validation unit (token-weighted for SFT)."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        total += float(objective.loss(batch))
        count += batch.count
    model.train()
    return total / max(count, 1)


def _select(
    run: RunDir,
    model: torch.nn.Module,
    state: LoopState,
    settings: LoopSettings,
    val_loss: float,
    scores: dict[str, float],
    train_loss: float | None,
) -> bool:
    """Keep the weights if this validation is the best so far; returns whether to stop early."""
    # Lower is better: the loss, or a task metric negated.
    criterion = val_loss if settings.select_by == "val_loss" else -scores[f"val_{settings.select_by}"]
    if state.best_score is None or criterion < state.best_score:
        state.best_score, state.best_val_loss, state.best_step = criterion, val_loss, state.step
        state.evals_without_improvement = 0
        _save_best(run, model)
    else:
        state.evals_without_improvement += 1
    run.emit(
        EventType.metrics,
        f"step {state.step}: val loss {val_loss:.4f}"
        + "".join(f", {name} {value:.4f}" for name, value in scores.items()),
        step=state.step,
        train_loss=train_loss,
        val_loss=val_loss,
        **scores,
    )
    patience = settings.early_stopping_patience
    if patience is None or state.evals_without_improvement < patience:
        return False
    run.emit(
        EventType.early_stopped,
        f"no improvement in {patience} validations; best step {state.best_step}",
        step=state.step,
        best_step=state.best_step,
    )
    return True


def _save_best(run: RunDir, model: torch.nn.Module) -> None:
    best = run.path / "best"
    best.mkdir(exist_ok=True)
    save_file(trainable_state(model), str(best / ".trainable.tmp"))
    (best / ".trainable.tmp").replace(best / "trainable.safetensors")
