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
    assert plan["examples"] == 200 and plan["layout"]["fits"]
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
