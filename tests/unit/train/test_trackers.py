"""A finished run reported to MLflow (local file store), TensorBoard (event files) and W&B (offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunesmith.config import ConfigError
from tunesmith.train.plots import plot_loss_curve
from tunesmith.train.trackers import parse_trackers, report_run

METRICS = [
    {"step": 1, "epoch": 0, "train_loss": 2.5, "lr": 1e-4},
    {"step": 2, "epoch": 0, "train_loss": 2.1, "lr": 1e-4},
    {"step": 2, "epoch": 0, "val_loss": 2.3},
    {"step": 3, "epoch": 0, "train_loss": 1.9, "lr": 1e-4},
]


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder as a finished LoRA run leaves it (the files trackers read)."""
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump({"train": {"model": "tiny", "lr": 1e-4, "lora": {"rank": 8}}})
    )
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in METRICS))
    (run / "run.json").write_text(
        json.dumps({"run_id": "run-1", "train_loss": 1.9, "steps": 3, "status": "ok"})
    )
    (run / "adapter" / "README.md").write_text("# run-1\n")
    plot_loss_curve(METRICS, run / "loss_curve.png", "run-1")
    return run


def test_unknown_tracker_is_named() -> None:
    assert parse_trackers("mlflow, tensorboard") == ["mlflow", "tensorboard"]
    with pytest.raises(ConfigError, match="--report-to comet: choose from mlflow, tensorboard, wandb"):
        parse_trackers("mlflow,comet")


@pytest.mark.parametrize("store", ["file", "default"])
def test_mlflow_store_has_params_metrics_and_artifacts(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path, store: str
) -> None:
    """A local file store (MLflow wants the opt-in now), and tunesmith's default: SQLite in TUNESMITH_HOME."""
    from mlflow.tracking import MlflowClient

    if store == "file":
        uri = (tmp_path / "mlruns").as_uri()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    else:
        uri = f"sqlite:///{isolated_home / 'mlflow.db'}"
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    report_run(run_dir, ["mlflow"])
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("tunesmith").experiment_id])
    assert run.data.params["lora.rank"] == "8" and run.data.tags["tunesmith.run_id"] == "run-1"
    history = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert history == [(1, 2.5), (2, 2.1), (3, 1.9)]
    assert run.data.metrics["val_loss"] == 2.3 and run.data.metrics["final/train_loss"] == 1.9
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"loss_curve.png", "README.md"}


def test_tensorboard_event_files_have_the_curve(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report_run(run_dir, ["tensorboard"])
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train_loss")] == [
        (1, 2.5),
        (2, 2.1),
        (3, 1.9),
    ]
    assert "loss_curve" in events.Tags()["images"]


def test_wandb_offline_run_is_written(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    report_run(run_dir, ["wandb"])
    [log] = run_dir.glob("wandb/offline-run-*/run-*.wandb")  # what `wandb sync` uploads later
    records = log.read_bytes()  # protobuf records: the keys and JSON values appear as written
    for text in (b"train_loss", b"val_loss", b"lora.rank", b"final/steps", b"run-1-files"):
        assert text in records, text
    assert list(run_dir.glob("wandb/offline-run-*/files/media/images/loss_curve_*.png"))


def test_train_report_to_tensorboard_and_mlflow(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_home: Path
) -> None:
    """`tunesmith train --report-to` reports the run it just finished; an unknown name fails before training."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from typer.testing import CliRunner

    from tunesmith.cli import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default: SQLite and artifacts in the home
    demo = Path(__file__).resolve().parents[3] / "tunesmith" / "data" / "demo"
    args = ["train", "--model", str(tiny_model_dir), "--data", str(demo / "val.jsonl"), "--max-steps", "2",
            "--batch-size", "4", "--json"]  # fmt: skip
    wrong = CliRunner().invoke(app, [*args, "--report-to", "comet"])
    assert isinstance(wrong.exception, ConfigError) and not list(tmp_path.glob("home/runs/*"))
    result = CliRunner().invoke(app, [*args, "--report-to", "tensorboard,mlflow"])
    assert result.exit_code == 0, result.output
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [1, 2]
    assert (isolated_home / "mlflow.db").is_file() and list(
        isolated_home.glob("mlartifacts/*/artifacts/loss_curve.png")
    )


def test_an_evaluation_report_goes_to_tensorboard_and_mlflow(tmp_path: Path, isolated_home: Path) -> None:
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tunesmith.train.trackers import report_evaluation

    out = tmp_path / "run-7" / "eval"
    out.mkdir(parents=True)
    models = [
        {"name": "base zero-shot", "metrics": {"rouge_l": {"value": 0.2, "ci_low": 0.1, "ci_high": 0.3}}},
        {"name": "run-7", "metrics": {"rouge_l": {"value": 0.4, "ci_low": 0.3, "ci_high": 0.5}}},
    ]
    (out / "report.json").write_text(json.dumps({"models": models}))
    (out / "report.md").write_text("| model | rouge_l |\n")
    report_evaluation(out, ["tensorboard", "mlflow"])
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    assert round(events.Scalars("eval/run-7/rouge_l")[0].value, 4) == 0.4
    client = MlflowClient(tracking_uri=f"sqlite:///{isolated_home / 'mlflow.db'}")
    [run] = client.search_runs([client.get_experiment_by_name("tunesmith").experiment_id])
    assert run.info.run_name == "run-7-eval" and run.data.metrics["eval/base zero-shot/rouge_l"] == 0.2
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.md"]
