"""Kill a training process mid-run, resume it, and get exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.conftest import DEMO


def _train_command(model: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "tunesmith", "train", "--model", str(model), "--data", str(DEMO / "train.jsonl"),
        "--val-data", str(DEMO / "val.jsonl"), "--max-steps", "120", "--batch-size", "4", "--lr", "3e-3",
        "--save-every", "3", "--eval-every", "5", "--seed", "7", "--out", str(out), "--json",
    ]  # fmt: skip


def test_killed_run_resumes_to_the_same_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TUNESMITH_HOME": str(tmp_path / "home")}
    reference = subprocess.run(
        _train_command(tiny_model_dir, tmp_path / "full"), env=env, capture_output=True, text=True
    )
    assert reference.returncode == 0, reference.stderr[-2000:]

    victim = subprocess.Popen(_train_command(tiny_model_dir, tmp_path / "killed"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoints = tmp_path / "killed" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (checkpoints.is_dir() and any(p.name >= "step-00000009" for p in checkpoints.iterdir())):
        assert time.monotonic() < deadline and victim.poll() is None, (
            "training ended before it could be killed"
        )
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "killed" / "run.json").exists()  # it really died mid-run

    resumed = subprocess.run(
        [sys.executable, "-m", "tunesmith", "train", "--resume", str(tmp_path / "killed"), "--json"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "succeeded" and summary["steps"] == json.loads(reference.stdout)["steps"]
    assert summary["trained_tokens"] == json.loads(reference.stdout)["trained_tokens"]

    expected = load_file(str(tmp_path / "full" / "adapter" / "adapter_model.safetensors"))
    actual = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=1e-6, msg=name)
    events = [
        json.loads(line)["type"] for line in (tmp_path / "killed" / "events.jsonl").read_text().splitlines()
    ]
    assert "resumed" in events and events[-1] == "succeeded"
