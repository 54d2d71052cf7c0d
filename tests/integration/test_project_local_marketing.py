"""The issue's "done when": `tunesmith init shop --template local-marketing && cd shop && tunesmith run`
with the template's own defaults and the embedded model ends with a deployed adapter that beat both
baselines significantly, and a second `run` runs nothing. Minutes on a CPU (README: the measured run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import requires_embedded_model
from tunesmith.cli import app

pytestmark = [pytest.mark.slow, requires_embedded_model]
runner = CliRunner()


def test_local_marketing_runs_to_a_deployed_adapter(
    embedded_model_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init", "shop", "--template", "local-marketing"]).exit_code == 0
    monkeypatch.chdir(tmp_path / "shop")

    first = runner.invoke(app, ["run", "--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["ran"] == ["prepare", "baseline", "train", "eval", "gate", "register", "deploy"]
    rows = {(c["model"], c["reference"], c["metric"]): c for c in summary["report"]["comparisons"]}
    for baseline in ("base zero-shot", "base 3-shot"):
        assert rows[("fine-tuned", baseline, "rouge_l")]["verdict"] == "better"
    deployment = runner.invoke(app, ["deploy", "show", "shop", "--json"])
    assert json.loads(deployment.stdout)["variants"] == [{"model": "shop@1", "weight": 100.0}]

    second = runner.invoke(app, ["run"])
    assert second.exit_code == 0 and "everything is up to date" in second.stdout
