"""`tunesmith federated`: each command explains itself; bad input is a user error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.cli.common import USER_ERRORS

runner = CliRunner()


@pytest.mark.parametrize(
    "command", [["federated"], ["federated", "simulate"], ["federated", "server"], ["federated", "client"]]
)
def test_every_federated_command_explains_itself(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and len(result.output) > 300


def test_bad_input_is_a_user_error_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "fed.yaml"
    bad.write_text("rounds: 0\npartition: {data: x.jsonl, clients: 2}\n", encoding="utf-8")
    no_clients = tmp_path / "deploy.yaml"
    no_clients.write_text("rounds: 2\n", encoding="utf-8")
    for args, message in [
        (["simulate", "--config", str(bad)], "rounds: Input should be greater than 0"),
        (["simulate", "--config", str(no_clients)], "a simulation needs client_data or partition"),
        (["simulate", "--config", str(tmp_path / "none.yaml")], "cannot read the federated config"),
        (
            ["client", "--data", str(tmp_path / "nothing"), "--server", "127.0.0.1:9092"],
            "--data: no such file",
        ),
        (
            ["client", "--data", str(bad), "--server", "10.0.0.5:9092"],
            "pass --root-certificates (TLS) or --insecure",
        ),
    ]:
        result = runner.invoke(app, ["federated", *args])
        assert isinstance(result.exception, USER_ERRORS) and message in str(result.exception), result.output
