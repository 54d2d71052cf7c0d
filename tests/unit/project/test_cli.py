"""`tunesmith init`, `run` and `status` through the command line: they parse, call one function, print."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.unit.project.conftest import edit_project, shrink
from tunesmith.cli import app

runner = CliRunner()


def test_init_run_run_again_and_status(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "shop", "--template", "local-marketing"])
    assert result.exit_code == 0, result.output
    assert "next: cd shop && tunesmith run" in result.output
    edit_project(tmp_path / "shop", lambda spec: shrink(spec, tiny_model_dir))
    monkeypatch.chdir(tmp_path / "shop")

    first = runner.invoke(app, ["run"])
    assert first.exit_code == 0, first.output
    assert "before / after on 4 held-out examples" in first.stdout and "fine-tuned" in first.stdout
    assert "✓ deploy" in first.stderr and "shop -> shop@1 (100% of traffic)" in first.stderr
    run_dir = Path(
        json.loads(Path(".tunesmith/stages.json").read_text())["stages"]["train"]["outputs"]["run_dir"]
    )
    config = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]
    assert config["data"] == str(tmp_path / "shop" / ".tunesmith" / "prepared")  # not relative to the cwd
    shown = runner.invoke(app, ["runs", "show", run_dir.name])
    assert shown.exit_code == 0 and "gate 3: passed on evaluation 2" in shown.stdout, shown.output
    second = runner.invoke(app, ["run"])
    assert second.exit_code == 0 and "everything is up to date" in second.stdout
    assert "= up to date train" in second.stderr

    edit_project(tmp_path / "shop", lambda spec: spec["train"].update(lr=0.002))
    status = json.loads(runner.invoke(app, ["status", "--json"]).stdout)
    assert [(s["stage"], s["state"]) for s in status][1:3] == [("baseline", "up to date"), ("train", "stale")]
    table = runner.invoke(app, ["status"]).stdout
    assert "train.lr: 0.001 -> 0.002" in table


def test_a_stage_name_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "evaluate", "--project", str(tmp_path)])
    assert result.exit_code == 2 and "'evaluate' is not one of" in result.output


def test_a_failed_stage_prints_the_error_and_exits_nonzero(tmp_path: Path, tiny_model_dir: Path) -> None:
    runner.invoke(app, ["init", str(tmp_path / "shop"), "--template", "moderation"])
    edit_project(tmp_path / "shop", lambda spec: shrink(spec, tiny_model_dir))
    edit_project(tmp_path / "shop", lambda spec: spec["gate"].update(min_difference=5.0))
    result = runner.invoke(app, ["run", "--project", str(tmp_path / "shop")])
    assert result.exit_code == 2
    assert "gate failed: the adapter did not clear the gate" in result.stderr
    assert "earlier stages keep their results" in result.stderr
