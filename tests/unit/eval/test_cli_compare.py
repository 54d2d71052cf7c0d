"""`tunesmith compare` through the CLI on the tiny model: baselines and a full model, with verdicts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.conftest import DEMO
from tunesmith.cli import app
from tunesmith.config import default_database_url
from tunesmith.registry.models import EvaluationRecord
from tunesmith.registry.store import Registry

runner = CliRunner()


def test_compare_baselines_and_a_model_directory(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = ["compare", "zero-shot", "few-shot", str(tiny_model_dir), "--base", str(tiny_model_dir),
            "--data", str(DEMO / "test.jsonl"), "--train-data", str(DEMO / "val.jsonl"), "--shots", "2",
            "--limit", "4", "--max-new-tokens", "4", "--metric", "rouge_l", "--metric", "chrf",
            "--out", str(tmp_path / "cmp")]  # fmt: skip
    result = runner.invoke(app, [*args, "--judge-model", str(tiny_model_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["name"] for m in report["models"]] == ["base zero-shot", "base 2-shot", tiny_model_dir.name]
    assert set(report["models"][0]["metrics"]) == {"rouge_l", "chrf"}
    # the same weights prompted the same way answer the same: no significant difference, p = 1
    same = [
        c
        for c in report["comparisons"]
        if c["model"] == tiny_model_dir.name and c["reference"] == "base zero-shot"
    ]
    assert {c["verdict"] for c in same} == {"no significant difference"} and {c["p_value"] for c in same} == {
        1.0
    }
    assert (tmp_path / "cmp" / "report.html").is_file()
    judge = report["judge"]  # a local judge: rubric per model, the last model against each earlier one
    assert judge["examples"] == 4 and judge["metric"] == "rouge_l"
    assert set(judge["rubric"]) == {"base zero-shot", "base 2-shot", tiny_model_dir.name}
    assert set(judge["rubric"]["base 2-shot"]) == {"accuracy", "helpfulness"}
    assert (
        judge["rubric"]["base 2-shot"]["accuracy"]["unparseable"] == 0
    )  # log-likelihood choices always parse
    assert [(row["model"], row["reference"]) for row in judge["pairwise"]] == [
        (tiny_model_dir.name, "base zero-shot"), (tiny_model_dir.name, "base 2-shot")
    ]  # fmt: skip
    assert "## LLM judge" in (tmp_path / "cmp" / "report.md").read_text()
    with Registry(default_database_url()).connect().session() as session:
        stored = session.scalars(select(EvaluationRecord)).one()
    assert stored.out_dir == str(tmp_path / "cmp") and stored.report["comparisons"] == report["comparisons"]

    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "verdict" in table.output and "significant" in table.output


def test_compare_refuses_few_shot_without_training_data(tiny_model_dir: Path) -> None:
    result = runner.invoke(
        app, ["compare", "few-shot", "--base", str(tiny_model_dir), "--data", str(DEMO / "test.jsonl")]
    )
    assert result.exit_code != 0
    assert "needs training data" in str(result.exception)


def test_meteor_without_java_is_a_one_line_error(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    command = [sys.executable, "-m", "tunesmith", "compare", "zero-shot", "--base", str(tiny_model_dir), "--data",
               str(DEMO / "test.jsonl"), "--limit", "2", "--max-new-tokens", "2", "--metric", "meteor"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ}, check=False)
    assert result.returncode == 2 and "Java runtime" in result.stderr and "Traceback" not in result.stderr


def test_eval_with_beam_search_flags_reports_the_decoding_of_each_figure(
    varied_model_dir: Path, tmp_path: Path
) -> None:
    args = ["eval", "-m", str(varied_model_dir), "--data", str(DEMO / "test.jsonl"), "--limit", "3",
            "--max-new-tokens", "6", "--metric", "chrf", "--num-beams", "3", "--length-penalty", "1.5",
            "--no-repeat-ngram-size", "2", "--out", str(tmp_path / "e")]  # fmt: skip
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    expected = "beam search (3 beams, length penalty 1.5), no repeated 2-grams"
    assert report["settings"]["decoding"] == expected
    assert [m["decoding"] for m in report["models"]] == [expected]
    assert f"| {expected} |" in (tmp_path / "e" / "report.md").read_text()
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "beam search" in table.output


def test_eval_with_an_out_of_scope_label_needs_calibration_data_and_reports_its_metrics(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from tests.conftest import write_jsonl

    rows = [{"text": f"{word} please", "label": label} for label in ("hours", "menu") for word in "abcd"]
    outside = [{"text": f"joke {word}", "label": "oos"} for word in "abcd"]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    calibration = write_jsonl(tmp_path / "cal.jsonl", rows[::2] + outside[:2])
    test = write_jsonl(tmp_path / "test.jsonl", rows[1::2] + outside[2:])
    args = ["eval", "-m", str(tiny_model_dir), "--data", str(test), "--train-data", str(train), "--shots", "2",
            "--out-of-scope-label", "oos", "--out", str(tmp_path / "e"), "--json"]  # fmt: skip
    missing = runner.invoke(app, args)
    assert missing.exit_code != 0 and "calibration_data" in str(missing.exception)
    result = runner.invoke(app, [*args, "--calibration-data", str(calibration)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labels"] == ["hours", "menu", "oos"]
    for entry in report["models"]:
        assert {"in_scope_accuracy", "out_of_scope_recall"} <= set(entry["metrics"])
        assert entry["out_of_scope_threshold"] is not None
