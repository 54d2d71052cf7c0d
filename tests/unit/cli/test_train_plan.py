from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.conftest import DEMO
from tunesmith.cli import app

runner = CliRunner()


def test_dry_run_plans_without_training(tiny_model_dir: Path, isolated_home: Path) -> None:
    args = ["train", "--data", str(DEMO / "train.jsonl"), "--model", str(tiny_model_dir), "--dry-run"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["examples"] == 168 and plan["validation_examples"] == 32 and plan["layout"]["fits"]
    assert plan["estimated_seconds"] > 0 and plan["parameters"] > plan["trainable_parameters"] > 0
    assert not (isolated_home / "runs").exists()  # nothing was trained

    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "step layout" in table.stdout and "tokens/s" in table.stdout


def test_dry_run_that_cannot_fit_says_what_to_change_and_exits_1(tiny_model_dir: Path) -> None:
    result = runner.invoke(
        app,
        ["train", "--data", str(DEMO / "train.jsonl"), "--model", str(tiny_model_dir), "--method", "full",
         "--memory-limit-gb", "0.001", "--dry-run"],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "exceeds" in result.stderr and "--tuning lora" in result.stderr


def test_dry_run_says_what_a_budget_buys_and_no_val_trains_on_everything(tiny_model_dir: Path) -> None:
    args = ["train", "--data", str(DEMO / "train.jsonl"), "--model", str(tiny_model_dir), "--dry-run"]
    plain = json.loads(runner.invoke(app, [*args, "--no-val", "--json"]).stdout)
    assert plain["examples"] == 200 and plain["validation"] == "none" and plain["steps"] == 75  # 3 epochs
    tokens = json.loads(runner.invoke(app, [*args, "--no-val", "--token-budget", "20000", "--json"]).stdout)
    assert tokens["budget"] == "20,000 tokens" and 0 < tokens["total_tokens"] <= 20000 < plain["total_tokens"]
    assert tokens["epochs"] == round(tokens["steps"] / 25, 2)
    timed = runner.invoke(app, [*args, "--time-budget", "1h", "--json"])
    assert timed.exit_code == 0, timed.output
    hour = json.loads(timed.stdout)
    assert hour["budget"] == "60m00s" and hour["steps"] > plain["steps"]  # a budget, not 3 epochs, decides
    assert hour["estimated_seconds"] < 3600
    table = runner.invoke(app, [*args, "--time-budget", "1h"])
    assert "60m00s buys" in table.stdout and "held out" in table.stdout
    bad = runner.invoke(app, [*args, "--time-budget", "soon"])
    assert bad.exit_code != 0 and "--time-budget" in str(bad.exception)


def test_dry_run_plans_preference_runs_with_their_reference_pass(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.unit.train.test_preference import _pairs, _rated

    plans = {}
    for method, data in (("dpo", _pairs(tmp_path / "pairs.jsonl", 40)), ("orpo", tmp_path / "pairs.jsonl"),
                         ("kto", _rated(tmp_path / "rated.jsonl", 40))):  # fmt: skip
        args = ["train", "--method", method, "--data", str(data), "--model", str(tiny_model_dir), "--dry-run"]
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, result.output
        plans[method] = json.loads(result.stdout)
    dpo, orpo, kto = plans["dpo"], plans["orpo"], plans["kto"]
    assert dpo["objective"] == "dpo" and dpo["examples"] + dpo["validation_examples"] == 40
    assert dpo["validation"] == "held_out" and dpo["validation_examples"] > 0
    assert dpo["reference_seconds"] > 0 and orpo["reference_seconds"] == 0 and kto["reference_seconds"] > 0
    assert dpo["tokens_per_epoch"] == orpo["tokens_per_epoch"] > 0  # both answers of every pair
    # the whole job includes the reference pass (each plan measures its own speed, so dpo and orpo's
    # training seconds differ by the measurement's noise and are not compared)
    assert (
        dpo["estimated_seconds"] > dpo["reference_seconds"]
        and kto["estimated_seconds"] > kto["reference_seconds"]
    )
    table = runner.invoke(app, ["train", "--method", "dpo", "--data", str(tmp_path / "pairs.jsonl"), "--model",
                                str(tiny_model_dir), "--dry-run"])  # fmt: skip
    assert table.exit_code == 0 and "scoring the reference" in table.stdout
