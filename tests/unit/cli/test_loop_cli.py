"""`tunesmith loop`: each command explains itself; bad input exits 2 with one clear line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.cli.common import USER_ERRORS

runner = CliRunner()


@pytest.mark.parametrize("command", [["loop"], ["loop", "run"], ["loop", "status"], ["loop", "approve"],
                                     ["loop", "reject"], ["loop", "cancel"]])  # fmt: skip
def test_every_loop_command_explains_itself(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and len(result.output) > 300


def test_bad_input_is_a_user_error_naming_the_problem(tmp_path: Path) -> None:
    policy = tmp_path / "loop.yaml"
    policy.write_text("gate: {metric: rouge_l}\n", encoding="utf-8")
    for args, message in [
        (["run", "-d", "support", "-p", str(policy), "--until", "done"], "--until done: not a loop state"),
        (["run", "-d", "support", "-p", str(policy), "--every", "soon"], "--every"),
        (["run", "-d", "support", "-p", str(tmp_path / "none.yaml")], "cannot read the loop policy"),
        (["approve", "3"], "no loop with id 3"),
    ]:
        result = runner.invoke(app, ["loop", *args])
        assert isinstance(result.exception, USER_ERRORS) and message in str(result.exception), result.output


def test_a_missing_deployment_exits_2_without_a_traceback(tmp_path: Path) -> None:
    policy = tmp_path / "loop.yaml"
    policy.write_text("gate: {metric: rouge_l}\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "tunesmith", "loop", "run", "-d", "support", "-p", str(policy)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2 and "no deployment named support" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_json_is_valid_json_even_when_empty() -> None:
    result = runner.invoke(app, ["loop", "status", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
