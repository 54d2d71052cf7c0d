"""`tunesmith data prepare` end to end on a real public dataset (GSM8K test split) with the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import SHARED_DATASETS, requires_embedded_model
from tunesmith.cli import app
from tunesmith.config import default_database_url
from tunesmith.data.ingest import load_split
from tunesmith.registry.store import Registry

GSM8K = SHARED_DATASETS / "gsm8k" / "test.jsonl"
pytestmark = [
    pytest.mark.skipif(
        not GSM8K.is_file(), reason=f"{GSM8K} is absent (shared datasets not on this machine)"
    ),
    requires_embedded_model,
]


def test_gsm8k_is_prepared_versioned_and_readable_by_training(
    embedded_model_home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "gsm8k"
    command = ["data", "prepare", str(GSM8K), "--map", "instruction=question", "--map", "output=answer"]
    result = CliRunner().invoke(app, [*command, "--out", str(out), "--no-calibrate", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    steps = {step["name"]: step for step in summary["steps"]}
    assert steps["validate"]["rows_in"] == 1319 and sum(summary["splits"].values()) == 1319 - sum(
        sum(step["removed_by_reason"].values()) for step in summary["steps"]
    )
    assert steps["pii"]["changed"] == {}  # worked arithmetic like 1000-200-400=400 is not a phone number
    assert summary["tokens"]["context_length"] == 8192 and 0.3 < summary["tokens"]["loss_share"] < 0.9
    assert summary["splits"]["test"] == pytest.approx(0.15 * 1319, abs=3)
    train, digest = load_split(out, "train")
    assert digest == summary["hash"] and len(train) == summary["splits"]["train"]
    assert train[0].messages[-1]["content"].rsplit("#### ", 1)[1].strip().isdigit()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 3 and "Training cost estimate" in html
    record = Registry(default_database_url()).connect().get_dataset(summary["hash"])
    assert record is not None and record["lineage"]["inputs"][0]["rows"] == 1319
    inspected = CliRunner().invoke(app, ["data", "inspect", str(out), "--json"])
    assert json.loads(inspected.stdout)["hash"] == summary["hash"]
