from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import DEMO
from tests.unit.train.test_preference import _pairs
from tunesmith.cli import app
from tunesmith.config import default_database_url
from tunesmith.registry.models import AdapterRecord
from tunesmith.registry.store import Registry

runner = CliRunner()


def test_sft_then_dpo_from_its_adapter_by_run_id_registers_the_next_version(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    common = ["--model", str(tiny_model_dir), "--max-steps", "2", "--batch-size", "4", "--lora-dropout", "0",
              "--name", "acme", "--json"]  # fmt: skip
    sft = runner.invoke(app, ["train", "--data", str(DEMO / "val.jsonl"), *common])
    assert sft.exit_code == 0, sft.output
    sft_run, sft_dir = json.loads(sft.stdout)["run_id"], json.loads(sft.stdout)["run_dir"]
    pairs = str(_pairs(tmp_path / "pairs.jsonl", 6))
    dpo = runner.invoke(
        app, ["train", "--method", "dpo", "--data", pairs, "--val-data", pairs, "--beta", "0.2",
              "--init-adapter", sft_run, *common],
    )  # fmt: skip
    assert dpo.exit_code == 0, dpo.output
    summary = json.loads(dpo.stdout)
    assert summary["status"] == "succeeded" and summary["method"] == "lora"
    config = (Path(summary["run_dir"]) / "config.yaml").read_text()
    assert "method: dpo" in config and "beta: 0.2" in config and f"{sft_run}/adapter" in config
    events = (Path(summary["run_dir"]) / "events.jsonl").read_text()
    assert "reference log-probabilities from the starting adapter" in events
    evaluated = runner.invoke(app, ["eval", "--model", summary["run_id"], "--data", pairs, "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(evaluated.stdout)
    assert report["examples"] == 6 and report["reference"] == f"{Path(sft_dir) / 'adapter'}"
    for metric in report["metrics"].values():
        assert metric["ci_low"] <= metric["value"] <= metric["ci_high"]
    recorded = Registry(default_database_url()).connect().get_run(summary["run_id"])
    assert recorded is not None and [e["task"] for e in recorded["evaluations"]] == ["preference"]
    compared = runner.invoke(app, ["compare", "zero-shot", sft_run, summary["run_id"], "--data",
                                   str(DEMO / "test.jsonl"), "--limit", "4", "--max-new-tokens", "8",
                                   "--out", str(tmp_path / "compare"), "--json"])  # fmt: skip
    assert compared.exit_code == 0, compared.output
    assert [model["name"] for model in json.loads(compared.stdout)["models"]][1:] == [
        sft_run,
        summary["run_id"],
    ]
    with Registry(default_database_url()).connect().session() as session:
        records = session.scalars(select(AdapterRecord).where(AdapterRecord.name == "acme")).all()
        assert {(record.version, record.run_id) for record in records} == {
            (1, sft_run),
            (2, summary["run_id"]),
        }


def test_an_unknown_init_adapter_run_is_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    pairs = str(_pairs(tmp_path / "pairs.jsonl", 2))
    result = runner.invoke(
        app,
        [
            "train",
            "--method",
            "dpo",
            "--data",
            pairs,
            "--model",
            str(tiny_model_dir),
            "--init-adapter",
            "run-nope",
        ],
    )
    assert result.exit_code != 0
    assert "run-nope: no such run" in str(result.exception)
