"""Launch checks, shards and per-device memory of multi-process training (no process is started)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from tests.conftest import DEMO
from tunesmith.cli import app
from tunesmith.config import ConfigError, TrainSpec
from tunesmith.train.distributed import (
    ALONE,
    ProcessGroup,
    check_strategy,
    device_memory,
)
from tunesmith.train.launch import LaunchSettings, check_launch
from tunesmith.train.plan import MemoryEstimate, ModelShape

runner = CliRunner()
SHAPE = ModelShape(parameters=2_000, trainable=2_000, layers=3, heads=2, hidden=20, intermediate=40, vocab=10)


def _spec(**fields: object) -> TrainSpec:
    return TrainSpec(data=DEMO / "train.jsonl", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("settings", "spec", "message"),
    [
        (LaunchSettings(nproc=0), _spec(), "--nproc 0: give at least 1"),
        (LaunchSettings(nproc=2, nnodes=2, node_rank=2, master_port=29511), _spec(), "--node-rank 2: must be 0 to 1"),
        (LaunchSettings(nproc=2, nnodes=2, node_rank=1), _spec(), "needs --master-addr and --master-port"),
        (LaunchSettings(nproc=2), _spec(distributed={"backend": "nccl"}), "nccl needs CUDA"),
        (LaunchSettings(nproc=2), _spec(distributed={"strategy": "deepspeed"}), "pip install deepspeed"),
        (LaunchSettings(nproc=2), _spec(method="kto"), "method kto runs in one process"),
    ],
)  # fmt: skip
def test_a_launch_that_cannot_work_fails_before_starting_naming_the_flag(
    settings: LaunchSettings, spec: TrainSpec, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        check_launch(settings, spec)


def test_auto_shards_full_fine_tuning_and_replicates_lora() -> None:
    assert check_strategy(_spec()) == "ddp" and check_strategy(_spec(tuning="qlora")) == "ddp"
    assert check_strategy(_spec(tuning="full")) == "fsdp"
    assert check_strategy(_spec(tuning="full", distributed={"strategy": "ddp"})) == "ddp"
    with pytest.raises(ConfigError, match="runs without eval_metrics; drop it, or set strategy: ddp"):
        check_strategy(_spec(tuning="full", eval_metrics=["rouge_l"]))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tuning": "lora"}, "fsdp shards full fine-tuning; tuning lora trains a small adapter"),
        ({"tuning": "qlora"}, "fsdp shards full fine-tuning; tuning qlora"),
        ({"tuning": "full", "eval_metrics": ["rouge_l"]}, "eval_metrics generate in process 0 alone"),
        ({"tuning": "full", "compile": True}, "fsdp runs without compile"),
    ],
)
def test_fsdp_where_it_cannot_run_is_a_config_error_naming_the_key(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        _spec(distributed={"strategy": "fsdp"}, **fields)


def test_a_master_port_in_use_is_refused() -> None:
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"--master-port {port} is in use"):
            check_launch(LaunchSettings(nproc=2, master_port=port), _spec())


def test_each_process_takes_a_contiguous_share_and_together_every_example_once() -> None:
    items = list(range(7))
    shares = [ProcessGroup(rank, 3, "cpu").shard(items) for rank in range(3)]
    assert shares == [[0, 1], [2, 3], [4, 5, 6]]
    assert ALONE.shard(items) == items and ProcessGroup(1, 2, "cpu").shard([5]) == [5]


def test_ddp_holds_everything_in_each_process_and_a_gradient_bucket() -> None:
    one = MemoryEstimate(
        weights=8_000, trainable_state=24_000, activations=1_000, loss_buffers=500, overhead=3_350
    )
    ddp = device_memory(one, "ddp", 2, SHAPE)
    assert (ddp.weights, ddp.trainable_state, ddp.activations) == (8_000, 24_000, 1_000)
    assert ddp.total == one.total + 6_000  # fp32 gradients flattened to be summed


def test_fsdp_splits_weights_and_optimizer_state_and_gathers_two_layers_and_the_root() -> None:
    one = MemoryEstimate(
        weights=4 * 2_000, trainable_state=12 * 2_000, activations=1_000, loss_buffers=500, overhead=3_350
    )
    fsdp = device_memory(one, "fsdp", 4, SHAPE)
    root, layer = 10 * 20, (2_000 - 10 * 20) // 3  # embeddings; each of 3 layers
    assert fsdp.weights == 8_000 // 4 + 4 * (root + 2 * layer)  # a quarter, and fp32 gathered weights
    assert fsdp.trainable_state == 24_000 // 4
    assert fsdp.activations == 1_000 and fsdp.overhead == 3_350 + 4 * 2 * layer  # the layers' gradients
    assert fsdp.total < device_memory(one, "ddp", 4, SHAPE).total


def test_nproc_zero_is_a_usage_error_on_the_command_line(tiny_model_dir: Path) -> None:
    args = ["train", "--data", str(DEMO / "train.jsonl"), "--model", str(tiny_model_dir), "--max-steps", "1"]
    result = runner.invoke(app, [*args, "--nproc", "0"])  # were it launched, one short step, not a hang
    assert isinstance(result.exception, ConfigError)  # `main()` prints it and exits 2
    assert "--nproc 0" in str(result.exception)


def test_dry_run_gives_memory_per_device_for_every_process(tiny_model_dir: Path) -> None:
    args = [
        "train",
        "--data",
        str(DEMO / "train.jsonl"),
        "--model",
        str(tiny_model_dir),
        "--dry-run",
        "--json",
    ]
    one = json.loads(runner.invoke(app, args).stdout)
    ddp = json.loads(runner.invoke(app, [*args, "--nproc", "2", "--nnodes", "2"]).stdout)
    assert one["strategy"] is None and one["processes"] == 1
    assert one["memory_per_device_gb"] == one["layout"]["memory_gb"]
    assert ddp["strategy"] == "ddp" and ddp["processes"] == 4
    assert ddp["memory_per_device_gb"]["weights"] == ddp["layout"]["memory_gb"]["weights"]
    assert list(ddp["memory_per_device_by_strategy_gb"]) == ["ddp"]  # LoRA replicates


def test_dry_run_of_full_fine_tuning_compares_ddp_and_fsdp_per_device(tiny_model_dir: Path) -> None:
    args = ["train", "--data", str(DEMO / "train.jsonl"), "--model", str(tiny_model_dir), "--tuning", "full"]
    plan = json.loads(runner.invoke(app, [*args, "--dry-run", "--json", "--nproc", "2"]).stdout)
    assert plan["strategy"] == "fsdp"  # auto shards full fine-tuning
    by_strategy = plan["memory_per_device_by_strategy_gb"]
    assert plan["memory_per_device_gb"] == by_strategy["fsdp"]
    assert list(by_strategy) == ["ddp", "fsdp"]  # the tiny model rounds to 0.0 GB: sizes are tested above
    table = runner.invoke(app, [*args, "--dry-run", "--nproc", "2"]).stdout
    assert "per device, fsdp (GB)" in table and "(chosen)" in table
