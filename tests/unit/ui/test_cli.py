"""`tunesmith ui`: its help, and no auth refused off this machine."""

from __future__ import annotations

from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import ConfigError

runner = CliRunner()


def test_ui_explains_itself() -> None:
    result = runner.invoke(app, ["ui", "--help"])
    assert result.exit_code == 0 and "--no-auth" in result.output and "8600" in result.output


def test_no_auth_is_refused_on_a_public_interface() -> None:
    result = runner.invoke(app, ["ui", "--no-auth", "--host", "0.0.0.0", "--json"])
    assert isinstance(result.exception, ConfigError) and "--no-auth" in str(result.exception)
    assert result.output == ""  # refused before announcing an address
