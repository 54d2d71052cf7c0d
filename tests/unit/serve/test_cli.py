from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import default_database_url
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [["serve"], ["keys", "create"], ["adapters", "register"], ["deploy", "create"], ["deploy", "promote"]],
)
def test_serving_commands_explain_themselves(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def _json(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_keys_adapters_and_deploy_commands_work_on_the_registry(adapter_dirs: list[Path]) -> None:
    created = _json("keys", "create", "--tenant", "acme")
    assert isinstance(created, dict) and created["key"].startswith("ts-")
    store = ServingStore(Registry(default_database_url()).connect())
    assert store.authenticate(created["key"]) is not None
    assert _json("adapters", "register", "voice", str(adapter_dirs[0]), "--tenant", "acme") == {
        "name": "voice", "version": 1, "path": str(adapter_dirs[0].resolve()), "tenant": "acme"
    }  # fmt: skip
    _json("adapters", "register", "voice", str(adapter_dirs[1]), "--tenant", "acme")
    _json("deploy", "create", "acme-voice", "-v", "voice@1=90", "-v", "voice@2=10", "--tenant", "acme")
    _json("deploy", "weights", "acme-voice", "-v", "voice@1=50", "-v", "voice@2=50")
    _json("deploy", "promote", "acme-voice", "voice@2")
    shown = _json("deploy", "rollback", "acme-voice")
    assert isinstance(shown, dict)
    assert shown["variants"] == [{"model": "voice@1", "weight": 50.0}, {"model": "voice@2", "weight": 50.0}]
    assert [c["action"] for c in shown["history"]] == ["create", "set_weights", "promote", "rollback"]


def test_serve_refuses_an_adapter_for_another_base_with_exit_2(tiny_model_dir: Path, adapter_dirs: list[Path],
                                                               tmp_path: Path) -> None:  # fmt: skip
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (foreign / name).write_bytes((adapter_dirs[0] / name).read_bytes())
    config = json.loads((foreign / "adapter_config.json").read_text())
    (foreign / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "/elsewhere"})
    )
    result = subprocess.run(
        [sys.executable, "-m", "tunesmith", "serve", "--model", str(tiny_model_dir), "--no-auth",
         "--adapter", f"acme={foreign}", "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "trained on base model '/elsewhere'" in result.stderr
