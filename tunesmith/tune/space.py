"""A trial's training config: the search space sampled through optuna, merged into the base `train:` section.

Owns: which train key each searched hyperparameter sets (`TRAIN_KEYS`), how each is drawn (log-uniform,
uniform, stepped or categorical), the grid of every combination for the grid sampler, and the section a
trial trains with. Does not own: the spec's validation (`tunesmith.config.tune`), running trials.
"""

from __future__ import annotations

import copy
from typing import Any

import optuna

from tunesmith.config.tune import FloatParamSpec, IntParamSpec, LogParamSpec, SearchSpaceSpec

# Searched hyperparameter -> the dotted TrainSpec key it sets.
TRAIN_KEYS = {
    "lr": "lr",
    "rank": "lora.r",
    "alpha": "lora.alpha",
    "dropout": "lora.dropout",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "tuning": "tuning",
}


def suggest(trial: optuna.Trial, space: SearchSpaceSpec) -> dict[str, Any]:
    """The hyperparameters of `trial`, by search-space name (`lr`, `rank`, ...)."""
    params: dict[str, Any] = {}
    for name in TRAIN_KEYS:
        param = getattr(space, name)
        if param is None:
            continue
        if isinstance(param, list):  # tuning: categorical
            params[name] = trial.suggest_categorical(name, param)
        elif param.choices is not None:
            params[name] = trial.suggest_categorical(name, param.choices)
        elif isinstance(param, LogParamSpec):
            assert param.low is not None and param.high is not None
            params[name] = trial.suggest_float(name, param.low, param.high, log=True)
        elif isinstance(param, IntParamSpec):
            assert param.low is not None and param.high is not None
            params[name] = trial.suggest_int(name, param.low, param.high, step=param.step)
        else:
            assert isinstance(param, FloatParamSpec) and param.low is not None and param.high is not None
            params[name] = trial.suggest_float(name, param.low, param.high)
    return params


def grid(space: SearchSpaceSpec) -> dict[str, list[Any]]:
    """Every searched hyperparameter's choices (the grid sampler's search space)."""
    result: dict[str, list[Any]] = {}
    for name in TRAIN_KEYS:
        param = getattr(space, name)
        if param is None:
            continue
        choices = param if isinstance(param, list) else param.choices
        assert choices is not None, f"{name}: the grid sampler needs choices (TuneSpec checks this)"
        result[name] = list(choices)
    return result


def trial_section(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The base `train:` section with the trial's hyperparameters set at their train keys."""
    section = copy.deepcopy(base)
    for name, value in params.items():
        *parents, key = TRAIN_KEYS[name].split(".")
        target = section
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = value
    return section
