"""One trial of a study: a recorded training run with sampled hyperparameters, reporting as it validates.

Owns: the trial's training spec (the base section, the sampled values, its run folder under the study,
validation placed at the same count of training examples whatever the batch size, so a pruner compares
like with like), running it through the same trainers and registry listener as `tunesmith train`, linking
the run to the study in the registry, reporting each validation to optuna and stopping when pruned, and
the trial's score (its best validation's, the checkpoint the run keeps). Does not own: sampling
(`tunesmith.tune.space`), storage (`tunesmith.tune.storage`), the loop (`tunesmith.train.loop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from tunesmith.config import ConfigError, TrainSpec, build_spec
from tunesmith.config.tune import SearchSpaceSpec, TuneSpec
from tunesmith.registry.store import Registry
from tunesmith.train.dpo import train_dpo
from tunesmith.train.kto import train_kto
from tunesmith.train.orpo import train_orpo
from tunesmith.train.rundir import RunEvent
from tunesmith.train.sft import train_sft
from tunesmith.tune.space import suggest, trial_section
from tunesmith.tune.storage import worker_identity

# The trainer of each method, as `tunesmith train` dispatches them. Imported here, not per trial: forked
# workers start with them loaded.
TRAINERS = {"sft": train_sft, "dpo": train_dpo, "kto": train_kto, "orpo": train_orpo}


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a study shares, as plain values."""

    study: str
    study_dir: Path
    space: SearchSpaceSpec
    base: dict[str, Any]  # the validated base `train:` section
    objective: str  # "val_loss" or a task metric
    examples_per_validation: int  # training examples between two validations (the pruner's step)


def trial_setup(spec: TuneSpec, study: str, study_dir: Path, base: dict[str, Any]) -> TrialSetup:
    """The shared part of every trial: validation every `eval_every` steps of the base config's batch."""
    base_spec = build_spec(TrainSpec, base, {})
    per_step = base_spec.batch_size * base_spec.grad_accum
    return TrialSetup(study, study_dir, spec.search, base, spec.objective, base_spec.eval_every * per_step)


def trial_spec(setup: TrialSetup, number: int, params: dict[str, Any]) -> TrainSpec:
    """The training spec of trial `number` with hyperparameters `params`."""
    section = trial_section(setup.base, params)
    spec = build_spec(TrainSpec, section, {})
    per_step = spec.batch_size * spec.grad_accum
    section |= {
        "eval_every": max(1, round(setup.examples_per_validation / per_step)),
        "out": str(setup.study_dir / "trials" / f"trial-{number:04d}"),
        "name": f"{setup.study}-trial-{number}",
        "select_by": setup.objective,
    }
    if setup.objective != "val_loss":
        section["eval_metrics"] = sorted({*(spec.eval_metrics or []), setup.objective})
    return build_spec(TrainSpec, section, {})


@dataclass
class _Reporter:
    """Reports each validation to optuna (at its count of training examples) and keeps the best score."""

    trial: optuna.Trial
    objective: str
    examples_per_step: int
    examples_per_validation: int
    best: float | None = None
    pruned: bool = False
    reported: set[int] = field(default_factory=set)

    def __call__(self, step: int, val_loss: float, scores: dict[str, float]) -> bool:
        value = val_loss if self.objective == "val_loss" else scores[f"val_{self.objective}"]
        better = max if self.objective != "val_loss" else min
        self.best = value if self.best is None else better(self.best, value)
        at = math.ceil(step * self.examples_per_step / self.examples_per_validation)
        if at in self.reported:  # a last validation just after a regular one: same point for the pruner
            return False
        self.reported.add(at)
        self.trial.report(value, at)
        self.pruned = bool(self.trial.should_prune())
        return self.pruned


def run_trial(trial: optuna.Trial, setup: TrialSetup, registry: Registry) -> float:
    """Train trial `trial`, recorded in `registry` and linked to the study; its score.

    Raises `optuna.TrialPruned` when the pruner stopped it (the run is kept, recorded as pruned).
    """
    spec = trial_spec(setup, trial.number, suggest(trial, setup.space))
    trial.set_user_attr("worker", worker_identity())
    trial.set_user_attr("train", spec.model_dump(mode="json", exclude_defaults=True))
    record = registry.run_listener(spec.name)
    run_ids: list[str] = []

    def listen(event: RunEvent) -> None:
        record(event)
        if not run_ids:  # the run exists now: link it both ways
            run_ids.append(event.run_id)
            trial.set_user_attr("run_id", event.run_id)
            registry.record_trial(event.run_id, setup.study, trial.number, "running", None)

    reporter = _Reporter(
        trial, setup.objective, spec.batch_size * spec.grad_accum, setup.examples_per_validation
    )
    try:
        TRAINERS[spec.method](spec, listener=listen, progress=False, on_validation=reporter)
    except BaseException:
        if run_ids:
            registry.record_trial(run_ids[0], setup.study, trial.number, "failed", reporter.best)
        raise
    if reporter.best is None:
        registry.record_trial(run_ids[0], setup.study, trial.number, "failed", None)
        raise ConfigError(
            f"trial {trial.number} did not validate: a study needs validation data (val_data, or held-out "
            "examples: do not set hold_out_val false)"
        )
    state = "pruned" if reporter.pruned else "complete"
    registry.record_trial(run_ids[0], setup.study, trial.number, state, reporter.best)
    if reporter.pruned:
        raise optuna.TrialPruned(f"pruned with {setup.objective} {reporter.best:.6g}")
    return reporter.best
