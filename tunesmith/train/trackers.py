"""Experiment trackers (MLflow, TensorBoard, Weights & Biases): a finished run's record copied into each.

Owns: reading a run folder (`config.yaml` params, `metrics.jsonl` per step, `run.json`, `loss_curve.png`,
the artifact's `README.md` model card) and writing it through each tracker's own client. Does not own:
the training loop. Reports are made from the folder after the run has ended, so the loop keeps no
callbacks and a tracker that is down fails the report, not the training run; the run folder holds
everything needed to report it again.

Where each one writes: MLflow to its tracking URI (`MLFLOW_TRACKING_URI`, else SQLite at
`TUNESMITH_HOME/mlflow.db` with artifacts in `TUNESMITH_HOME/mlartifacts`); TensorBoard event files to the run folder's `tensorboard/`; W&B through
`wandb.init` in the run folder (`WANDB_MODE=offline` writes a run to sync later, no account needed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith.config import ConfigError, tunesmith_home


@dataclass(frozen=True)
class RunRecord:
    """What trackers receive from a run folder."""

    run_id: str
    params: dict[str, str]  # the training spec, flattened (`lora.rank`), values as text
    steps: list[tuple[int, dict[str, float]]]  # metric lines in step order
    summary: dict[str, float]  # run.json's numeric results
    images: list[Path]  # the loss curve
    artifacts: list[Path]  # the model card


def parse_trackers(text: str) -> list[str]:
    """`mlflow,tensorboard` → names, each checked against `TRACKERS` (the option's value, validated once)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise ConfigError(f"--report-to {', '.join(unknown)}: choose from {', '.join(TRACKERS)}")
    return names


def report_run(run_dir: Path, trackers: list[str]) -> dict[str, str]:
    """Copy the run at `run_dir` into each tracker; returns where each one put it."""
    if not trackers:
        return {}
    record = read_run(run_dir)
    return {name: TRACKERS[name](record, run_dir) for name in trackers}


def report_evaluation(out_dir: Path, trackers: list[str]) -> dict[str, str]:
    """Copy an evaluation report folder (`report.json` and its files) into each tracker."""
    if not trackers:
        return {}
    report = json.loads((out_dir / "report.json").read_text(encoding="utf-8"))
    scores = {
        f"eval/{model['name']}/{metric}": float(value["value"] if isinstance(value, dict) else value)
        for model in report["models"]
        for metric, value in model["metrics"].items()
        if _is_number(value["value"] if isinstance(value, dict) else value)
    }
    files = ("report.md", "report.html", "predictions.jsonl")
    record = RunRecord(
        run_id=f"{out_dir.resolve().parent.name}-eval",
        params={"models": ", ".join(model["name"] for model in report["models"])},
        steps=[(0, scores)],
        summary={},
        images=[],
        artifacts=[out_dir / name for name in files if (out_dir / name).is_file()],
    )
    return {name: TRACKERS[name](record, out_dir) for name in trackers}


def read_run(run_dir: Path) -> RunRecord:
    """The run folder as a `RunRecord`."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["train"]
    result = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    steps: dict[int, dict[str, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        values = json.loads(line)
        numbers = {k: float(v) for k, v in values.items() if k != "step" and _is_number(v)}
        steps.setdefault(int(values["step"]), {}).update(numbers)
    cards = [run_dir / name / "README.md" for name in ("adapter", "model")]
    return RunRecord(
        run_id=str(result["run_id"]),
        params=_flatten(config),
        steps=sorted(steps.items()),
        summary={k: float(v) for k, v in result.items() if _is_number(v)},
        images=[p for p in [run_dir / "loss_curve.png"] if p.is_file()],
        artifacts=[p for p in cards if p.is_file()],
    )


def _to_mlflow(record: RunRecord, run_dir: Path) -> str:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = None  # the tracking server's own artifact root
    if uri is None:  # MLflow's file store is frozen ("maintenance mode"); its local default is SQLite
        uri, artifacts = (
            f"sqlite:///{tunesmith_home() / 'mlflow.db'}",
            (tunesmith_home() / "mlartifacts").as_uri(),
        )
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tunesmith")
    experiment_id = (
        experiment.experiment_id if experiment else client.create_experiment("tunesmith", artifacts)
    )
    run = client.create_run(experiment_id, run_name=record.run_id, tags={"tunesmith.run_id": record.run_id})
    metrics = [Metric(k, v, 0, step) for step, values in record.steps for k, v in values.items()]
    metrics += [Metric(f"final/{k}", v, 0, 0) for k, v in record.summary.items()]
    params = [Param(k, v[:6000]) for k, v in record.params.items()]  # MLflow's limit on a value
    for start in range(0, max(len(metrics), len(params)), 100):  # log_batch takes 100 params at most
        client.log_batch(
            run.info.run_id, metrics=metrics[start : start + 100], params=params[start : start + 100]
        )
    for path in record.images + record.artifacts:
        client.log_artifact(run.info.run_id, str(path))
    client.set_terminated(run.info.run_id)
    return f"{uri} run {run.info.run_id}"


def _to_tensorboard(record: RunRecord, run_dir: Path) -> str:
    import numpy as np
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    log_dir = run_dir / "tensorboard"
    writer = SummaryWriter(log_dir=str(log_dir))
    for step, values in record.steps:
        for key, value in values.items():
            writer.add_scalar(key, value, step)
    writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in record.params.items()))
    for path in record.images:
        writer.add_image(path.stem, np.asarray(Image.open(path).convert("RGB")), dataformats="HWC")
    for path in record.artifacts:
        if path.suffix == ".md":  # the model card, or an evaluation's report table
            writer.add_text(path.stem, path.read_text(encoding="utf-8"))
    writer.close()
    return str(log_dir)


def _to_wandb(record: RunRecord, run_dir: Path) -> str:
    import wandb

    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "tunesmith"), name=record.run_id, dir=str(run_dir),
        config=record.params, reinit="create_new",
    )  # fmt: skip
    for step, values in record.steps:
        run.log(values, step=step)
    for path in record.images:
        run.log({path.stem: wandb.Image(str(path))})
    run.summary.update({f"final/{k}": v for k, v in record.summary.items()})
    if record.artifacts:
        artifact = wandb.Artifact(f"{record.run_id}-files", type="tunesmith-run")
        for path in record.artifacts:
            artifact.add_file(str(path))
        run.log_artifact(artifact)
    run.finish()
    wandb.teardown()  # stops wandb's service process, which writes the offline run file asynchronously
    return str(run.dir)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


TRACKERS: dict[str, Callable[[RunRecord, Path], str]] = {
    "mlflow": _to_mlflow,
    "tensorboard": _to_tensorboard,
    "wandb": _to_wandb,
}
