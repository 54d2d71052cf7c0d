from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from tests.conftest import DEMO
from tunesmith.config import TrainSpec
from tunesmith.train.sft import train_sft
from tunesmith.tune.trial import _Reporter


def test_the_validation_hook_stops_the_run_and_records_it_pruned(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    calls: list[tuple[int, float]] = []

    def prune_at_second(step: int, val_loss: float, scores: dict[str, float]) -> bool:
        calls.append((step, val_loss))
        return len(calls) == 2

    spec = TrainSpec(
        model=str(tiny_model_dir), data=DEMO / "val.jsonl", val_data=DEMO / "val.jsonl", max_steps=8, batch_size=4,
        eval_every=2, save_every=100, out=tmp_path / "run", lora={"dropout": 0.0},
    )  # fmt: skip
    result = train_sft(spec, progress=False, on_validation=prune_at_second)
    assert [step for step, _ in calls] == [2, 4] and result.steps == 4
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events if e["type"] in ("pruned", "succeeded")] == ["pruned", "succeeded"]


def test_the_reporter_reports_at_the_count_of_examples_and_keeps_the_best_score() -> None:
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2))
    distributions = {"lr": FloatDistribution(1e-5, 1e-2, log=True)}
    for value in (1.0, 1.2):  # two finished trials at about 1.0 after each validation
        study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=value, params={"lr": 1e-3},
                                            distributions=distributions, intermediate_values={1: value, 2: value, 3: value}))  # fmt: skip
    reporter = _Reporter(
        study.ask(distributions), "val_loss", examples_per_step=8, examples_per_validation=16
    )
    assert reporter(2, 0.5, {}) is False  # 16 examples: point 1, in the warm-up
    assert reporter(3, 0.4, {}) is False  # 24 examples rounds up to point 2: better than the median
    assert reporter(4, 9.0, {}) is False  # point 2 again (a last validation): not reported twice
    assert reporter.reported == {1, 2} and reporter.best == 0.4
    worse = _Reporter(study.ask(distributions), "val_loss", examples_per_step=8, examples_per_validation=16)
    assert worse(2, 3.0, {}) is False
    assert worse(4, 4.0, {}) is True and worse.pruned  # point 2: its best so far is above the median


def test_a_metric_objective_is_scored_selected_and_maximised(tmp_path: Path) -> None:
    from tunesmith.config.tune import TuneSpec
    from tunesmith.tune.trial import trial_setup, trial_spec

    base = {"data": "train.jsonl", "batch_size": 8, "eval_every": 10, "eval_metrics": ["rouge_l"]}
    tune = TuneSpec(train=base, search={"batch_size": {"choices": [4, 16]}}, objective="accuracy")
    setup = trial_setup(tune, "s", tmp_path, base)
    spec = trial_spec(setup, 3, {"batch_size": 16, "lr": 1e-3})
    assert spec.eval_metrics == ["accuracy", "rouge_l"] and spec.select_by == "accuracy"
    assert spec.eval_every == 5 and spec.batch_size == 16  # validation every 80 examples, as the base's
    assert spec.out == tmp_path / "trials" / "trial-0003" and spec.name == "s-trial-3"
    study = optuna.create_study(direction="maximize")
    reporter = _Reporter(study.ask(), "accuracy", examples_per_step=16, examples_per_validation=80)
    reporter(5, 2.0, {"val_accuracy": 0.5})
    reporter(10, 1.0, {"val_accuracy": 0.4})
    assert reporter.best == 0.5  # the highest accuracy, whatever the loss
