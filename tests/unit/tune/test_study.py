from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from tests.conftest import DEMO
from tunesmith.config import TrainSpec, build_spec, default_database_url
from tunesmith.registry.store import Registry
from tunesmith.tune import load_tune_file, run_study
from tunesmith.tune.storage import open_storage, spent


def _tune_file(tmp_path: Path, tiny_model_dir: Path, **overrides: Any) -> Path:
    val = tmp_path / "val.jsonl"
    val.write_text("".join((DEMO / "test.jsonl").read_text().splitlines(keepends=True)[:6]))
    spec = {
        "train": {
            "model": str(tiny_model_dir), "data": str(DEMO / "val.jsonl"), "val_data": str(val), "max_steps": 2,
            "batch_size": 4, "eval_every": 1, "save_every": 100, "early_stopping_patience": None,
            "lora": {"dropout": 0.0},
        },
        "search": {"lr": {"low": 1e-4, "high": 1e-2}, "rank": {"choices": [2, 4]}},
        "trials": 3, "pruner": "none", "out": str(tmp_path / "study"),
    } | overrides  # fmt: skip
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_study_records_its_trials_as_linked_runs_and_writes_best_config_and_report(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = load_tune_file(_tune_file(tmp_path, tiny_model_dir), {})
    result = run_study(spec, progress=False)
    assert spec.study == "tune" and result.trials["complete"] == 3
    runs = Registry(default_database_url()).connect().study_runs("tune")
    assert [run["trial"] for run in runs] == [0, 1, 2]
    assert all(run["status"] == "succeeded" and run["trial_state"] == "complete" for run in runs)
    assert result.best_run_id in {run["id"] for run in runs}
    best = yaml.safe_load(Path(result.best_config or "").read_text())["train"]
    trained = build_spec(TrainSpec, best, {})  # ready to train: a valid train section
    assert trained.lora.r == result.best_params["rank"] and trained.lr == pytest.approx(
        result.best_params["lr"]
    )
    assert "out" not in best and "name" not in best
    page = Path(result.report).read_text()
    assert page.count("<img") == 4 and "parallel coordinates" in page and "importance" in page
    assert set(json.loads((tmp_path / "study" / "importance.json").read_text())) <= {"lr", "rank"}


def test_a_killed_study_resumes_and_reruns_the_trial_the_kill_interrupted(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    spec = load_tune_file(_tune_file(tmp_path, tiny_model_dir, trials=1), {})
    run_study(spec, progress=False)
    # A worker killed mid-trial leaves it RUNNING, recorded with a process that no longer exists.
    study = optuna.load_study(study_name="tune", storage=open_storage(None, tmp_path / "study"))
    killed = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
                        "rank": optuna.distributions.CategoricalDistribution([2, 4])})  # fmt: skip
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead.pid, "started": 0.0})
    registry = Registry(default_database_url()).connect()
    registry.record_event("run-killed", "running", "training", {}, "2026-12-07T00:00:00")
    killed.set_user_attr("run_id", "run-killed")
    result = run_study(spec.model_copy(update={"trials": 2}), progress=False)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].params == trials[1].params and trials[2].user_attrs["retry_of"] == 1
    assert result.trials["complete"] == 2 and spent(study) == 2
    runs = {run["id"]: run for run in registry.study_runs("tune")}
    assert len(runs) == 3 and runs["run-killed"]["status"] == "failed"
    assert runs["run-killed"]["trial_state"] == "failed" and runs["run-killed"]["trial"] == 1


def test_two_workers_share_the_journal_storage_without_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = load_tune_file(_tune_file(tmp_path, tiny_model_dir, trials=2, workers=2), {})
    result = run_study(spec, progress=False)
    study = optuna.load_study(study_name="tune", storage=open_storage(None, tmp_path / "study"))
    assert result.trials["complete"] >= 2 and result.trials["fail"] == 0
    hosts = {trial.user_attrs["worker"]["pid"] for trial in study.get_trials()}
    assert len(hosts) >= 1 and os.getpid() not in hosts  # trials ran in worker processes


def test_a_spent_time_budget_starts_no_trial_and_still_reports(tiny_model_dir: Path, tmp_path: Path) -> None:
    spec = load_tune_file(_tune_file(tmp_path, tiny_model_dir, trials=None, time_budget="0.001s"), {})
    result = run_study(spec, progress=False)
    assert result.trials["complete"] == 0 and result.best_config is None and result.best_value is None
    assert "no trial completed yet" in Path(result.report).read_text()
