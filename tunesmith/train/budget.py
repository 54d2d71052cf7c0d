"""How many optimizer steps a job runs: its epochs or `max_steps`, or what a time or token budget buys.

Owns: turning a token budget into the steps whose examples fit it (in the loop's data order), and a
time budget into the steps this machine's estimated speed fits, validation paid for. Does not own:
measuring speed (`plan.estimate_throughput`), or keeping to a time budget while training (the loop plans
again from each step's measured time).
"""

from __future__ import annotations

from tunesmith.config import ConfigError, TrainSpec
from tunesmith.data.estimate import CHECKPOINTING_SLOWDOWN
from tunesmith.train.loop import steps_within_tokens
from tunesmith.train.plan import estimate_throughput, model_shape, step_counts
from tunesmith.train.records import StepPlan


def planned_steps(
    spec: TrainSpec, lengths: list[int], val_tokens: int, tokens_per_second: float | None
) -> int:
    """The job's optimizer steps: `max_steps`, else `epochs`; with a budget, the steps that fit it instead.

    A token budget counts the tokens of the very examples each step trains on. A time budget buys
    `tokens_per_second` (this machine's estimated speed) for its seconds, less what validation takes: a
    forward pass over the validation tokens every `eval_every` steps, about a third of a training step's
    time per token. `max_steps` still caps a budget. Raises ConfigError when not one step fits.
    """
    steps_per_epoch, steps = step_counts(len(lengths), spec)
    if spec.time_budget is None and spec.token_budget is None:
        return steps
    budgets = [spec.token_budget] if spec.token_budget is not None else []
    if spec.time_budget is not None:
        assert tokens_per_second is not None, "a time budget is planned from a speed"
        step_tokens = sum(lengths) / steps_per_epoch
        validation_share = val_tokens / 3 / (spec.eval_every * step_tokens)
        budgets.append(int(spec.time_budget * tokens_per_second / (1 + validation_share)))
    fitting = steps_within_tokens(min(budgets), lengths, spec.batch_size * spec.grad_accum, spec.seed)
    if fitting == 0:
        raise ConfigError(
            f"train: the budget buys less than one step (about {min(budgets):,} tokens, a step trains "
            f"{round(sum(lengths) / steps_per_epoch):,}); raise time_budget or token_budget"
        )
    return min(fitting, spec.max_steps) if spec.max_steps is not None else fitting


def budget_speed(spec: TrainSpec, model_path: str, bf16: bool, device: str, layout: StepPlan) -> float | None:
    """Training tokens/s a time budget is planned with (None without one): a matmul probe here, slowed when
    the step recomputes activations. The run plans again from its measured steps as it goes."""
    if spec.time_budget is None:
        return None
    shape = model_shape(model_path, spec.tuning, spec.lora.r, spec.lora.target_modules)
    throughput = estimate_throughput(shape, spec.tuning, bf16, device, [])
    slowdown = CHECKPOINTING_SLOWDOWN if layout.gradient_checkpointing else 1.0
    return throughput.tokens_per_second * slowdown
