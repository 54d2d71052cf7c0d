from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.cli.common import UsageError
from tunesmith.config import ConfigError

runner = CliRunner()


def _qa_csv(path: Path, rows: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "answer", "ticket"])
        for i in range(rows):
            writer.writerow([f"What is {i} plus {i * 7} in the ledger {i % 5}?", f"It is {i + i * 7}.", i])
    return path


@pytest.mark.parametrize("command", [["data", "prepare"], ["data", "inspect"]])
def test_commands_explain_themselves(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output and len(result.output) > 300


def test_prepare_maps_columns_prints_json_and_inspect_agrees(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _qa_csv(tmp_path / "qa.csv", 40)
    out = tmp_path / "prepared"
    args = ["data", "prepare", str(data), "--map", "instruction=question", "--map", "output=answer"]
    args += [
        "--out",
        str(out),
        "--model",
        str(tiny_model_dir),
        "--no-calibrate",
        "--split",
        "80/10/10",
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["splits"] == {"train": 32, "val": 4, "test": 4} and summary["kind"] == "chat"
    assert summary["inputs"][0]["rows"] == 40 and Path(summary["report"]).is_file()
    inspected = runner.invoke(app, ["data", "inspect", str(out)])
    assert inspected.exit_code == 0 and summary["hash"][:12] in inspected.output


def test_config_file_data_section_and_flags_override_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    data = _qa_csv(tmp_path / "qa.csv", 20)
    section = {
        "inputs": [str(data)], "out": str(tmp_path / "from-config"), "model": str(tiny_model_dir),
        "column_map": {"instruction": "question", "output": "answer"}, "calibrate": False, "group_by": "ticket",
    }  # fmt: skip
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({"data": section}), encoding="utf-8")
    result = runner.invoke(app, ["data", "prepare", "--config", str(config), "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "from-config" / "dataset.json").read_text(encoding="utf-8"))
    assert (
        manifest["lineage"]["seed"] == 3
        and manifest["lineage"]["steps"][-2]["params"]["group_by"] == "ticket"
    )


def test_bad_flags_are_user_errors_that_name_the_flag(tmp_path: Path) -> None:
    data = _qa_csv(tmp_path / "qa.csv", 3)
    bad_map = runner.invoke(
        app, ["data", "prepare", str(data), "--out", str(tmp_path / "o"), "--map", "question"]
    )
    assert isinstance(bad_map.exception, UsageError) and "FIELD=COLUMN" in str(bad_map.exception)
    bad_pii = runner.invoke(
        app, ["data", "prepare", str(data), "--out", str(tmp_path / "o"), "--pii", "hide"]
    )
    assert isinstance(bad_pii.exception, ConfigError) and "data.pii" in str(bad_pii.exception)
    bad_split = runner.invoke(
        app, ["data", "prepare", str(data), "--out", str(tmp_path / "o"), "--split", "x"]
    )
    assert isinstance(bad_split.exception, UsageError) and "--split" in str(bad_split.exception)
    missing = runner.invoke(app, ["data", "inspect", str(tmp_path)])
    assert isinstance(missing.exception, FileNotFoundError) and "not a prepared dataset" in str(
        missing.exception
    )


def test_the_shipped_prepare_config_loads() -> None:
    from tests.conftest import REPO
    from tunesmith.config import PrepareSpec, build_spec, load_config_file

    spec = build_spec(PrepareSpec, load_config_file(REPO / "configs" / "prepare.yaml").data, {})
    assert spec.group_by == "conversation_id" and spec.split == (0.8, 0.1, 0.1) and len(spec.inputs) == 2
