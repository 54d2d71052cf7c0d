"""Two processes (gloo on CPU, through `tunesmith train --nproc 2`) train the adapter one process trains,
and a two-process run stopped at a checkpoint resumes to the uninterrupted one.

Each process's share of a step is one whole micro-batch here (batch 2, grad_accum 2), so the summed
gradient is bitwise one process's and the bound of 1e-5 holds with room to spare. Dropout is 0: with
dropout, processes draw their own masks. Launches cost most of the time (each process imports torch and
transformers), so the run is 20 steps and the stop is made by cutting a finished run's folder back to its
step-10 checkpoint (what a run stopped after it leaves on disk) rather than by a third launch killed mid-run
(`test_resume.py` kills one process mid-run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import DEMO
from tunesmith.config import TrainSpec
from tunesmith.train.sft import train_sft

STEPS = 20
SETTINGS: dict[str, Any] = {
    "max_steps": STEPS, "batch_size": 2, "grad_accum": 2, "lr": 3e-3, "lora.dropout": 0.0,
    "save_every": 5, "eval_every": 10, "seed": 7,
}  # fmt: skip


def _flags() -> list[str]:
    return [f"--{key.replace('.', '-').replace('_', '-')}={value}" for key, value in SETTINGS.items()]


def _launch(args: list[str], home: Path) -> dict[str, Any]:
    env = {**os.environ, "TUNESMITH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "train", *args, "--nproc", "2", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = launcher.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)  # the launcher and both training processes
        raise
    assert launcher.returncode == 0, stderr[-3000:]
    summary: dict[str, Any] = json.loads(stdout)  # process 0's summary, and nothing from process 1
    return summary


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[name] - b[name]).abs().max()) for name in a)


@pytest.fixture(scope="module")
def two_processes(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any]]:
    """An uninterrupted `--nproc 2` run: its folder and summary."""
    folder = tmp_path_factory.mktemp("two-processes")
    data = [
        "--model",
        str(tiny_model_dir),
        "--data",
        str(DEMO / "train.jsonl"),
        "--val-data",
        str(DEMO / "val.jsonl"),
    ]
    summary = _launch([*data, *_flags(), "--out", str(folder / "run")], folder / "home")
    return folder / "run", summary


def test_two_processes_train_the_adapter_one_process_trains(
    two_processes: tuple[Path, dict[str, Any]], tiny_model_dir: Path, tmp_path: Path
) -> None:
    run, summary = two_processes
    nested = {"lora": {"dropout": 0.0}} | {k: v for k, v in SETTINGS.items() if "." not in k}
    spec = TrainSpec(model=str(tiny_model_dir), data=DEMO / "train.jsonl", val_data=DEMO / "val.jsonl",
                     out=tmp_path / "one", **nested)  # fmt: skip
    one = train_sft(spec, progress=False)

    assert _max_difference(_adapter(run), _adapter(tmp_path / "one")) <= 1e-5
    assert summary["steps"] == one.steps == STEPS
    assert summary["trained_tokens"] == one.trained_tokens  # every process's tokens counted once
    assert summary["train_loss"] == pytest.approx(one.train_loss, abs=1e-6)  # token-weighted over both
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    types = [event["type"] for event in events]
    assert types.count("created") == 1 and types.count("succeeded") == 1  # process 0 alone wrote the folder
    assert "2 processes" in next(event["message"] for event in events if event["type"] == "running")


def test_a_stopped_two_process_run_resumes_to_the_uninterrupted_one(
    two_processes: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    run, summary = two_processes
    stopped = tmp_path / "stopped"
    shutil.copytree(run, stopped)
    for later in ["adapter", "run.json", *(f"checkpoints/{p.name}" for p in (run / "checkpoints").iterdir())]:
        if later.startswith("checkpoints/step-") and later <= "checkpoints/step-00000010":
            continue
        target = stopped / later
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    saved = json.loads((stopped / "checkpoints" / "step-00000010" / "loop.json").read_text())
    assert saved["step"] == 10 and saved["world_size"] == 2

    resumed = _launch(["--resume", str(stopped)], tmp_path / "home")
    assert resumed["steps"] == STEPS and resumed["trained_tokens"] == summary["trained_tokens"]
    assert _max_difference(_adapter(stopped), _adapter(run)) <= 1e-6
    types = [json.loads(line)["type"] for line in (stopped / "events.jsonl").read_text().splitlines()]
    assert "resumed" in types and types[-1] == "succeeded"
