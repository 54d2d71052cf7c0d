from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import DEMO, write_jsonl
from tunesmith.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["train"],
        ["eval"],
        ["compare"],
        ["quickstart"],
        ["models", "list"],
        ["data", "show"],
        ["runs", "list"],
        ["runs", "show"],
        ["init"],
        ["run"],
        ["status"],
        ["ab", "report"],
        ["monitor", "check"],
        ["monitor", "alerts"],
        ["audit", "bias"],
    ],
)
def test_every_command_explains_itself(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output
    assert len(result.output) > 300


def test_runs_list_json_is_valid_json_even_when_empty() -> None:
    result = runner.invoke(app, ["runs", "list", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output) == []


def test_models_list_json_names_the_embedded_default() -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    models = json.loads(result.output)
    assert models[0]["name"] == "smollm2-135m-instruct" and models[0]["source"] == "embedded"


def test_train_json_then_runs_and_eval(tiny_model_dir: Path, tmp_path: Path) -> None:
    args = ["train", "--model", str(tiny_model_dir), "--data", str(DEMO / "val.jsonl"), "--val-data",
            str(DEMO / "test.jsonl"), "--max-steps", "2", "--batch-size", "4", "--json"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for key in ("run_id", "run_dir", "status", "trained_tokens", "wall_seconds", "train_loss", "val_loss"):
        assert key in summary
    assert summary["status"] == "succeeded" and summary["trained_tokens"] > 0

    runs = json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)
    assert [r["id"] for r in runs] == [summary["run_id"]]
    shown = json.loads(runner.invoke(app, ["runs", "show", summary["run_id"], "--json"]).stdout)
    assert shown["adapters"][0]["version"] == 1 and shown["events"][-1]["type"] == "succeeded"

    result = runner.invoke(app, ["eval", "--model", summary["run_id"], "--data", str(DEMO / "test.jsonl"),
                                 "--limit", "3", "--max-new-tokens", "4", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [m["name"] for m in report["models"]] == ["base zero-shot", "base 5-shot", summary["run_id"]]
    assert {"rouge_l", "bleu", "chrf", "exact_match"} <= set(report["models"][0]["metrics"])
    eval_dir = Path(summary["run_dir"]) / "eval"
    predictions = (eval_dir / "predictions.jsonl").read_text().splitlines()
    assert (
        len(predictions) == 9 and {"prompt", "prediction", "reference"} <= json.loads(predictions[0]).keys()
    )
    assert "| base zero-shot |" in (eval_dir / "report.md").read_text()


def test_config_file_with_flag_overrides(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"train:\n  model: {tiny_model_dir}\n  data: {DEMO / 'val.jsonl'}\n  max_steps: 5\n  lora:\n    r: 4\n"
    )
    result = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(config),
            "--max-steps",
            "1",
            "--lora-alpha",
            "8",
            "--lora-dropout",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]
    assert saved["max_steps"] == 1 and saved["lora"] == {**saved["lora"], "r": 4, "alpha": 8, "dropout": 0.0}


def _tunesmith(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed entry point, so the user-error path of `main()` is what runs."""
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], capture_output=True, text=True)


def test_bad_data_exits_2_naming_file_and_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "q", "completion": "a"}, {"prompt": "q"}])
    result = _tunesmith("train", "--model", str(tiny_model_dir), "--data", str(bad))
    assert result.returncode == 2
    assert "bad.jsonl:2: missing field 'completion'" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_errors_exit_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  data: x.jsonl\n  lora:\n    r: 0\n  epocs: 2\n")
    result = _tunesmith("train", "--config", str(config))
    assert result.returncode == 2
    assert "train.lora.r" in result.stderr and "train.epocs" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_show_marks_the_learned_tokens(tiny_model_dir: Path) -> None:
    result = runner.invoke(
        app, ["data", "show", str(DEMO / "test.jsonl"), "--model", str(tiny_model_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    learned = "".join(t["text"] for t in shown["tokens"] if t["loss"])
    assert learned.endswith("Warmly, the Bramble & Bean crew<|im_end|>")
    assert "customer-care" not in learned and 0 < shown["num_loss_tokens"] < shown["num_tokens"]
    table = runner.invoke(app, ["data", "show", str(DEMO / "test.jsonl"), "--model", str(tiny_model_dir)])
    assert "with loss" in table.output


def test_truncated_examples_are_reported_on_stderr(tiny_model_dir: Path, tmp_path: Path) -> None:
    long = {"prompt": "hello", "completion": "word " * 300}
    data = write_jsonl(tmp_path / "long.jsonl", [long, {"prompt": "hi", "completion": "short answer"}])
    args = [
        "train",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--max-seq-len",
        "64",
        "--max-steps",
        "1",
    ]
    result = _tunesmith(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: 1 example(s) truncated to 64 tokens, e.g. long.jsonl:1" in result.stderr
