"""The hyperparameter study: `TuneSpec` and its search space (`tunesmith tune --config tune.yaml`). No torch.

Owns: what a study searches (learning rate log-uniform, LoRA rank, alpha and dropout, epochs, batch
size, tuning), how (sampler, pruner, objective, budget, workers, storage) and the training settings every
trial starts from (an embedded `train:` section and/or a `base:` config file's). Every range and choice
is checked here, and errors name the key (`tune.search.lr.low`). Does not own: running trials
(`tunesmith.tune`), or the training settings themselves (`TrainSpec` validates each trial's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config.base import Duration, _Spec


class LogParamSpec(_Spec):
    """A positive number drawn log-uniformly from [low, high] (every decade as likely), or one of `choices`."""

    low: float | None = Field(None, gt=0, description="Smallest value (with high).")
    high: float | None = Field(None, gt=0, description="Largest value (with low).")
    choices: list[float] | None = Field(
        None, min_length=1, description="The values to try, instead of a range."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> LogParamSpec:
        _check_range_or_choices(self.low, self.high, self.choices)
        if self.choices is not None and min(self.choices) <= 0:
            raise ValueError(f"choices must be above 0, got {min(self.choices):g}")
        return self


class FloatParamSpec(_Spec):
    """A number drawn uniformly from [low, high], or one of `choices`."""

    low: float | None = Field(None, description="Smallest value (with high).")
    high: float | None = Field(None, description="Largest value (with low).")
    choices: list[float] | None = Field(
        None, min_length=1, description="The values to try, instead of a range."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> FloatParamSpec:
        _check_range_or_choices(self.low, self.high, self.choices)
        return self

    def values(self) -> list[float]:
        """The bounds or choices, to check against a parameter's limits."""
        return self.choices or [value for value in (self.low, self.high) if value is not None]


class IntParamSpec(_Spec):
    """A whole number drawn from low..high (every `step`), or one of `choices`."""

    low: int | None = Field(None, description="Smallest value (with high).")
    high: int | None = Field(None, description="Largest value (with low).")
    step: int = Field(1, gt=0, description="Spacing of the values between low and high.")
    choices: list[int] | None = Field(
        None, min_length=1, description="The values to try, instead of a range."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> IntParamSpec:
        _check_range_or_choices(self.low, self.high, self.choices)
        return self

    def values(self) -> list[int]:
        return self.choices or [value for value in (self.low, self.high) if value is not None]


def _check_range_or_choices(low: float | None, high: float | None, choices: list[Any] | None) -> None:
    if choices is not None:
        if low is not None or high is not None:
            raise ValueError("give either low and high or choices, not both")
        return
    if low is None or high is None:
        raise ValueError("give low and high (a range) or choices (a list)")
    if low >= high:
        raise ValueError(f"low {low:g} must be below high {high:g}")


class SearchSpaceSpec(_Spec):
    """The hyperparameters a study varies; the ones left out keep the training config's value."""

    lr: LogParamSpec | None = Field(None, description="Peak learning rate, sampled log-uniformly.")
    rank: IntParamSpec | None = Field(None, description="LoRA rank (train.lora.r).")
    alpha: IntParamSpec | None = Field(None, description="LoRA alpha (train.lora.alpha).")
    dropout: FloatParamSpec | None = Field(None, description="LoRA dropout (train.lora.dropout), in [0, 1).")
    epochs: FloatParamSpec | None = Field(None, description="Passes over the training data.")
    batch_size: IntParamSpec | None = Field(None, description="Examples per batch.")
    tuning: list[Literal["lora", "qlora", "full"]] | None = Field(
        None, min_length=1, description="What to train (train.tuning): lora, qlora (CUDA), full."
    )

    @field_validator("rank", "alpha", "batch_size")
    @classmethod
    def _positive(cls, value: IntParamSpec | None) -> IntParamSpec | None:
        if value is not None and min(value.values()) < 1:
            raise ValueError(f"values must be at least 1, got {min(value.values())}")
        return value

    @field_validator("dropout")
    @classmethod
    def _probability(cls, value: FloatParamSpec | None) -> FloatParamSpec | None:
        if value is not None and not all(0 <= item < 1 for item in value.values()):
            raise ValueError(f"values must be in [0, 1), got {value.values()}")
        return value

    @field_validator("epochs")
    @classmethod
    def _epochs_positive(cls, value: FloatParamSpec | None) -> FloatParamSpec | None:
        if value is not None and min(value.values()) <= 0:
            raise ValueError(f"values must be above 0, got {min(value.values())}")
        return value

    @model_validator(mode="after")
    def _something_to_search(self) -> SearchSpaceSpec:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError(
                f"name at least one hyperparameter to search: {', '.join(type(self).model_fields)}"
            )
        return self


class TuneSpec(_Spec):
    """A hyperparameter study: trials of one training config with sampled hyperparameters."""

    base: Path | None = Field(
        None,
        description="A config file whose `train:` section every trial starts from (relative to this file).",
    )
    train: dict[str, Any] | None = Field(
        None, description="TrainSpec fields every trial starts from (override base's)."
    )
    search: SearchSpaceSpec = Field(..., description="The hyperparameters to search and their ranges.")
    objective: str = Field(
        "val_loss",
        description="What a trial is scored by: val_loss (minimised), or an evaluation metric scored during "
        "validation, e.g. rouge_l or accuracy (maximised; sft only). A trial's score is its best validation's.",
    )
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe",
        description="tpe: Bayesian (optuna's TPE, seeded); random; grid: every combination of choices (every searched "
        "hyperparameter needs choices).",
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median",
        description="Stop unpromising trials at a validation: median (worse than the median of earlier trials "
        "at the same point, after 3 trials), hyperband, or none.",
    )
    trials: int | None = Field(
        20, gt=0, description="Trials to finish (the study's total, resumed runs included)."
    )
    time_budget: Duration | None = Field(
        None, gt=0, description="Start no trial after this long (2h, 90m); running trials finish."
    )
    workers: int = Field(1, gt=0, description="Trials run at once on this machine, each in its own process.")
    storage: str | None = Field(
        None,
        description="Where the study lives: an RDB URL (postgresql://...) shared by machines; default a "
        "journal file in the study folder. sqlite:// only with one worker (SQLite is not safe for parallel "
        "writers).",
    )
    study: str | None = Field(None, description="Study name; default the config file's name.")
    seed: int = Field(42, description="Seed of the sampler (worker i uses seed + i).")
    out: Path | None = Field(None, description="Study folder; default TUNESMITH_HOME/studies/<study>.")

    @model_validator(mode="after")
    def _has_training_config(self) -> TuneSpec:
        if self.base is None and self.train is None:
            raise ValueError(
                "give the training config the trials start from: base (a file) or train (a section)"
            )
        if self.trials is None and self.time_budget is None:
            raise ValueError("give a budget: trials, time_budget or both")
        if self.sampler == "grid":
            open_ranges = [
                name
                for name in ("lr", "rank", "alpha", "dropout", "epochs", "batch_size")
                if getattr(self.search, name) is not None and getattr(self.search, name).choices is None
            ]
            if open_ranges:
                raise ValueError(
                    f"sampler grid needs choices for every searched hyperparameter: {open_ranges}"
                )
        if self.storage is not None and self.storage.startswith("sqlite") and self.workers > 1:
            raise ValueError(
                f"storage {self.storage}: SQLite is not safe for parallel writers; with {self.workers} workers use "
                "the default journal file or a PostgreSQL URL"
            )
        return self
