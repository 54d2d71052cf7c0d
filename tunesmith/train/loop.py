"""The one training loop: `fit(model, objective, settings, run)`, shared by every objective.

Owns: which examples each optimizer step trains on (a pure function of (seed, step), so a resumed run
sees the same ones), the optimizer and learning-rate schedule, gradient clipping, metrics lines and the
progress bar, validation, early stopping, best-checkpoint selection, resumable checkpoints and exact
resume, and training to a time budget: after every step the steps that still fit are planned again from
the measured time of steps, validations and checkpoints, the cosine schedule stretched over them, so the
run ends (after a last validation) at the budget. The host syncs with the device only when it logs.
Does not own: what a batch is or how its loss is computed (an `Objective`, e.g.
`tunesmith.train.sft.SFTObjective`), the model's setup (`tunesmith.train.model`), the run folder's files
(`tunesmith.train.rundir`), the saved artifact, or how many steps a job plans (`tunesmith.train.budget`).

An objective cuts one step's examples into batches (memory-sized passes) and sums a loss over each;
the loop divides every batch's sum by the count of the whole step (loss tokens for SFT, pairs for
preference objectives), so the gradient is that of the step's mean, however the step was cut.

Across processes (`tunesmith train --nproc`, `tunesmith.train.distributed`) each trains on its shard of
the same step, the step's count is the total over every process and the gradients are summed after the
passes, so the step's gradient is still that of its mean over every unit (not a mean of process means);
validation is sharded the same way; rank 0 writes the run folder, and what a process measured for itself
(the time budget's plan, task metrics) is rank 0's everywhere, so every process takes the same steps.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch
from safetensors.torch import load_file, save_file

from tunesmith.train.checkpoint import (
    LoopState,
    list_checkpoints,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
)
from tunesmith.train.distributed import ALONE, Replicas
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
    total_steps: int  # the steps planned (with a time budget: planned again after every step)
    seed: int
    lr: float
    weight_decay: float
    warmup_ratio: float  # share of the planned steps spent warming the learning rate up
    max_grad_norm: float
    log_every: int
    eval_every: int
    save_every: int
    keep_checkpoints: int
    early_stopping_patience: int | None
    select_by: str  # "val_loss", or a task metric `score` returns (higher is better)
    time_budget: float | None  # seconds the loop may run, validation and checkpoints included; None: no limit
    max_steps: int | None  # the most steps a time budget may plan (None: as many as fit)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.num_examples / self.examples_per_step)


@dataclass(frozen=True)
class LoopOutcome:
    state: LoopState  # counters at the end; the model holds the best checkpoint's weights
    train_loss: float | None  # mean over the last logging window


# Task metrics of the model as it stands, by name; with "loss" (the mean over validation units, as
# `objective.loss` sums it), the loop takes that as the validation loss instead of computing it again.
Score = Callable[[], dict[str, float]]

# Called after each validation with (step, val loss, task metrics as logged: `val_rouge_l` ...); True stops
# the run there, as pruned (a hyperparameter study's trial that is not promising: `tunesmith.tune`).
ValidationHook = Callable[[int, float, dict[str, float]], bool]


def step_examples(settings: LoopSettings, step: int) -> list[int]:
    """The training examples of optimizer step `step`: a shuffle per epoch, seeded by (seed, epoch)."""
    epoch, index_in_epoch = divmod(step, settings.steps_per_epoch)
    order = _epoch_order(settings.num_examples, settings.seed, epoch)
    per_step = settings.examples_per_step
    return order[index_in_epoch * per_step : (index_in_epoch + 1) * per_step]


def steps_within_tokens(budget: int, lengths: Sequence[int], examples_per_step: int, seed: int) -> int:
    """How many optimizer steps, in `step_examples`' order, train on at most `budget` tokens in all.

    `lengths`: each training example's tokens (what its passes count as `num_tokens`).
    """
    used, steps, epoch = 0, 0, 0
    while True:
        order = _epoch_order(len(lengths), seed, epoch)
        for start in range(0, len(order), examples_per_step):
            tokens = sum(lengths[index] for index in order[start : start + examples_per_step])
            if used + tokens > budget:
                return steps
            used, steps = used + tokens, steps + 1
        epoch += 1


def _epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning rate at `step` as a share of the peak: linear warm-up, then a cosine down to 0.

    The same values as transformers' `get_cosine_schedule_with_warmup`.
    """
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class _Timing:
    """What a time budget plans with: recent step times, the last validation's and checkpoint's."""

    steps: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=16))  # (seconds, tokens)
    validation: float | None = None  # None until the first validation ran
    checkpoint: float = 0.0


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
    on_validation: ValidationHook | None = None,
    replicas: Replicas = ALONE,
) -> LoopOutcome:
    """Train `model`'s trainable parameters on `objective` for `settings.total_steps` optimizer steps.

    `started` is the message and data of the `running` event (what the recipe chose); `score` adds task
    metrics to each validation; `on_validation` may stop the run after one (pruned); `replicas`, the other
    processes of a multi-process run. Returns with the best validated weights loaded into `model` (in
    rank 0, which saves them).
    """
    # ------------------------------------------------------------------ optimizer, schedule, resume
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(  # CUDA: one fused kernel for all parameters, not a few launches each
        parameters, lr=settings.lr, weight_decay=settings.weight_decay, fused=device.startswith("cuda")
    )
    state = LoopState(planned_steps=settings.total_steps, world_size=replicas.world_size)

    def schedule(step: int) -> float:  # reads the plan as it stands: resumed, or planned again under a budget
        return lr_factor(step, round(settings.warmup_ratio * state.planned_steps), state.planned_steps)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    checkpoints = list_checkpoints(run.checkpoints_path)
    if resuming and checkpoints:

        def restore(weights: dict[str, torch.Tensor], optimizer_state: dict[str, Any]) -> None:
            replicas.load_trainable_state(model, weights)
            replicas.load_optimizer_state(model, optimizer, optimizer_state)

        state, skipped = load_latest_checkpoint(checkpoints, restore, scheduler, replicas.rank)
        state.planned_steps = state.planned_steps or settings.total_steps  # earlier builds recorded no plan
        for reason in skipped:
            run.emit(EventType.warning, f"skipped a checkpoint that does not read back whole ({reason})")
        if state.world_size != replicas.world_size:  # the same examples per step; dropout draws differ
            run.emit(EventType.warning, f"resumed in {replicas.world_size} process(es) a run checkpointed in "
                     f"{state.world_size}: the same examples, but not the same dropout draws")  # fmt: skip
            state.world_size = replicas.world_size
        run.truncate_metrics(state.step)
        run.emit(EventType.resumed, f"resumed from step {state.step}", step=state.step)
    resumed_at = replicas.agree(state.step)
    if resumed_at != state.step:  # every process must start at one step, or their all-reduces never meet
        raise RuntimeError(
            f"process {replicas.rank} would resume at step {state.step}, process 0 at step {resumed_at}: the "
            f"run folder {run.path} must be on storage every machine reads"
        )
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
    timing = _Timing()
    progress = TrainProgress(state.planned_steps, enabled=show_progress)
    progress.start(state.step)
    model.train()
    while state.step < state.planned_steps:
        step_start = time.perf_counter()
        batches = objective.step_batches(replicas.shard(step_examples(settings, state.step)))
        counted = replicas.total(sum(batch.count for batch in batches), sum(b.num_tokens for b in batches))
        step_count, step_tokens = int(counted[0]), int(counted[1])  # over every process
        step_loss = torch.zeros((), device=device)
        for batch in batches:  # memory-sized passes; the same sum of gradients as one
            loss_sum = objective.loss(batch)
            (loss_sum / step_count).backward()
            step_loss += loss_sum.detach()
        for _ in range(replicas.lockstep(len(batches))):  # sharded weights: as many passes as the others
            (objective.loss(_filler(objective, settings, state.step)) * 0.0).backward()
        step_loss = replicas.sum_gradients(parameters, step_loss)
        state.trained_tokens += step_tokens
        window_tokens += step_tokens
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
        if settings.time_budget is not None:
            timing.steps.append((step_seconds, step_tokens))
            elapsed = state.loop_seconds + time.perf_counter() - loop_start
            state.planned_steps = replicas.agree(
                _plan_again(state.step, elapsed, timing, settings, validation)
            )
            progress.set_total(state.planned_steps)
        last = state.step >= state.planned_steps

        if state.step % settings.log_every == 0 or last:
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
        if validation and (state.step % settings.eval_every == 0 or last):
            validation_start = time.perf_counter()
            metrics = replicas.on_main(score) if score else {}
            # A score that computed the validation loss with its metrics spares a second pass over the data.
            last_val_loss = (
                metrics.pop("loss")
                if "loss" in metrics
                else _validation_loss(model, objective, validation, replicas)
            )
            scores = {f"val_{name}": round(value, 6) for name, value in metrics.items()}
            timing.validation = time.perf_counter() - validation_start
            run.log_metrics(
                {"step": state.step, "epoch": epoch, "val_loss": round(last_val_loss, 6)} | scores
            )
            progress.note_val(last_val_loss)
            stop = _select(run, model, state, settings, last_val_loss, scores, train_loss, replicas)
            if not stop and on_validation is not None and on_validation(state.step, last_val_loss, scores):
                run.emit(EventType.pruned, f"pruned at step {state.step}", step=state.step)
                stop = True
        if state.step % settings.save_every == 0 and not last and not stop:
            checkpoint_start = time.perf_counter()
            state.loop_seconds += checkpoint_start - loop_start
            loop_start = checkpoint_start
            # Each process's own random generators, so each resumes its own dropout draws.
            rank_rngs = replicas.gather(rng_state()) if replicas.world_size > 1 else None
            weights, optimizer_state = (
                replicas.trainable_state(model),
                replicas.optimizer_state(model, optimizer),
            )
            if run.writes:
                path = save_checkpoint(
                    run.checkpoints_path,
                    weights,
                    optimizer_state,
                    scheduler,
                    state,
                    settings.keep_checkpoints,
                    rank_rngs,
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
            timing.checkpoint = time.perf_counter() - checkpoint_start
        if stop:
            break
    progress.stop()
    state.loop_seconds += time.perf_counter() - loop_start
    if settings.time_budget is not None and not stop:
        run.emit(
            EventType.budget_reached,
            f"time budget of {settings.time_budget:.0f}s reached after {state.step} steps "
            f"({state.loop_seconds:.1f}s)",
            step=state.step,
            seconds=round(state.loop_seconds, 3),
        )

    # ------------------------------------------------------------------ the best weights
    if (
        state.best_step is not None
        and state.best_step != state.step
        and (run.writes or replicas.shards_weights)
    ):
        # Sharded weights load in every process, from rank 0's file; replicated ones only where saved.
        best = load_file(str(run.path / "best" / "trainable.safetensors")) if run.writes else {}
        replicas.load_trainable_state(model, best)
        run.emit(EventType.warning, f"keeping the best checkpoint (step {state.best_step}) over the last")
    return LoopOutcome(state=state, train_loss=train_loss)


def _plan_again(
    step: int, elapsed: float, timing: _Timing, settings: LoopSettings, validation: list[Any]
) -> int:
    """The steps that fit the time budget, `step` done in `elapsed` seconds: a validation every
    `eval_every` steps and a checkpoint every `save_every` are paid for, and a last validation kept time for.

    Step time is the median of recent steps (the first ones pay warm-up). Before the first validation its
    time is estimated as a forward pass over the validation tokens: a third of a training step's per token.
    """
    assert settings.time_budget is not None
    step_seconds = statistics.median(seconds for seconds, _ in timing.steps)
    validation_seconds = 0.0
    if validation and timing.validation is not None:
        validation_seconds = timing.validation
    elif validation:
        seconds_per_token = sum(s for s, _ in timing.steps) / max(1, sum(t for _, t in timing.steps))
        validation_seconds = sum(batch.num_tokens for batch in validation) * seconds_per_token / 3
    per_step = (
        step_seconds + validation_seconds / settings.eval_every + timing.checkpoint / settings.save_every
    )
    remaining = settings.time_budget - elapsed - validation_seconds
    planned = step + max(0, math.floor(remaining / per_step))
    return min(planned, settings.max_steps) if settings.max_steps is not None else planned


@torch.no_grad()
def _validation_loss(
    model: torch.nn.Module, objective: Objective[Any], batches: list[Any], replicas: Replicas
) -> float:
    """The mean loss over every validation unit (token-weighted for SFT), each process scoring its share."""
    model.eval()
    total, count = 0.0, 0
    mine = replicas.shard(batches)
    for batch in mine:
        total += float(objective.loss(batch))
        count += batch.count
    for _ in range(replicas.lockstep(len(mine))):  # sharded weights: as many passes as the others
        objective.loss(batches[0])
    model.train()
    summed, counted = replicas.total(total, count)
    return summed / max(counted, 1)


def _select(
    run: RunDir,
    model: torch.nn.Module,
    state: LoopState,
    settings: LoopSettings,
    val_loss: float,
    scores: dict[str, float],
    train_loss: float | None,
    replicas: Replicas,
) -> bool:
    """Keep the weights if this validation is the best so far; returns whether to stop early."""
    # Lower is better: the loss, or a task metric negated.
    criterion = val_loss if settings.select_by == "val_loss" else -scores[f"val_{settings.select_by}"]
    if state.best_score is None or criterion < state.best_score:
        state.best_score, state.best_val_loss, state.best_step = criterion, val_loss, state.step
        state.evals_without_improvement = 0
        _save_best(run, replicas.trainable_state(model))
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
    if state.step < settings.steps_per_epoch:
        # Early stopping guards against fitting the training examples too well, which starts once they
        # repeat: within the first epoch every step is unseen data, and a validation loss flat over a few
        # evaluations there is noise or a learning rate still to decay (CLINC150 stopped at 70% of its
        # budget this way: benchmarks/RESULTS.md). Patience counts on; the run stops after one epoch.
        return False
    run.emit(
        EventType.early_stopped,
        f"no improvement in {patience} validations; best step {state.best_step}",
        step=state.step,
        best_step=state.best_step,
    )
    return True


def _filler(objective: Objective[Any], settings: LoopSettings, step: int) -> Any:
    """A pass of the step's first example, run with its loss weighted 0 to keep processes in step."""
    return objective.step_batches(step_examples(settings, step)[:1])[0]


def _save_best(run: RunDir, weights: dict[str, torch.Tensor]) -> None:
    if not run.writes:
        return
    best = run.path / "best"
    best.mkdir(exist_ok=True)
    save_file(weights, str(best / ".trainable.tmp"))
    (best / ".trainable.tmp").replace(best / "trainable.safetensors")
