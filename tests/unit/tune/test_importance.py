from __future__ import annotations

import math

import optuna

from tunesmith.tune.report import parameter_importance


def test_importance_ranks_the_learning_rate_first_where_it_decides_the_score() -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    def objective(trial: optuna.Trial) -> float:  # the score is almost all learning rate
        lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
        rank = trial.suggest_categorical("rank", [4, 8, 16, 32])
        dropout = trial.suggest_float("dropout", 0.0, 0.3)
        return (math.log10(lr) + 3.5) ** 2 + 0.01 * rank / 32 + 0.01 * dropout

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=60)
    importance = parameter_importance(study)
    assert list(importance)[0] == "lr" and importance["lr"] > 0.8
    assert set(importance) == {"lr", "rank", "dropout"}
