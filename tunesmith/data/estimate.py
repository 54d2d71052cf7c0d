"""Training time and cost estimate: the one estimator `data prepare` and `train --dry-run` share.

Owns: the model's parameter count (from safetensors headers, no weights loaded), the throughput rule
(the median of earlier runs' tokens/s), a short measured CPU calibration for `data prepare`, and
`estimate_training`: total tokens and tokens/s to seconds, and FLOPs to GPU-hours and dollars on
common GPUs, priced from an editable YAML table. Does not own: training, or which earlier runs count
(the caller picks them: `data prepare` this machine's CPU runs, `train --dry-run` runs on its device
and precision). Training FLOPs are 6 × parameters per token for full fine-tuning and 4 × for LoRA (no
weight gradients for the frozen base), attention not counted. No torch at import.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from safetensors import safe_open

GPU_PRICES = Path(__file__).with_name("gpu_prices.yaml")
_CALIBRATION_ROWS, _CALIBRATION_LEN, _CALIBRATION_STEPS = 1, 256, 2


def load_gpu_prices(path: Path | None = None) -> list[dict[str, Any]]:
    """The GPU table: name, price_per_hour, bf16_tflops, mfu per GPU."""
    source = path or GPU_PRICES
    try:
        table = yaml.safe_load(source.read_text(encoding="utf-8"))
        gpus = table["gpus"]
        return [
            {
                "name": str(gpu["name"]),
                "price_per_hour": float(gpu["price_per_hour"]),
                "bf16_tflops": float(gpu["bf16_tflops"]),
                "mfu": float(gpu["mfu"]),
            }
            for gpu in gpus
        ]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{source}: cannot read GPU prices ({error}); expected 'gpus:' with name, price_per_hour, "
            "bf16_tflops and mfu per GPU"
        ) from error


def count_parameters(model_dir: Path) -> int:
    """Parameters in a local model directory, from its safetensors headers."""
    total = 0
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), framework="numpy") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                shape = handle.get_slice(key).get_shape()
                count = 1
                for size in shape:
                    count *= size
                total += count
    return total


def context_length(model_dir: Path) -> int | None:
    """The model's context window (`max_position_embeddings`), when its config names one."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    value = config.get("max_position_embeddings")
    return int(value) if value else None


def cpu_run_speeds(runs: list[dict[str, Any]], model: str, method: str) -> list[float]:
    """Training tokens/s of earlier succeeded CPU runs of `model` with `method` (for `median_throughput`).

    Runs recorded before runs named their device ran on the CPU (the only device then).
    """
    speeds = [
        float(run["metrics"]["tokens_per_second"])
        for run in runs
        if run["status"] == "succeeded"
        and run["base_model"] == model
        and run["method"] == method
        and run["metrics"].get("tokens_per_second")
        and run["metrics"].get("device", "cpu") == "cpu"
    ]
    return speeds


def calibrate_throughput(model_path: str, method: str) -> float:
    """Tokens/s of a few LoRA (or full) training steps of the model on this machine's CPU."""
    import torch

    from tunesmith.models.adapters import add_lora
    from tunesmith.models.loading import load_model

    torch.manual_seed(0)
    model: Any = load_model(model_path)
    if method == "lora":
        model = add_lora(model, rank=16, alpha=32, dropout=0.0, targets="all-linear")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    vocab = model.config.vocab_size
    batch = torch.randint(0, vocab, (_CALIBRATION_ROWS, _CALIBRATION_LEN))
    timings = []
    for _ in range(_CALIBRATION_STEPS + 1):  # the first step warms up allocators and kernels
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - start)
    return _CALIBRATION_ROWS * _CALIBRATION_LEN / statistics.median(timings[1:])


@dataclass(frozen=True)
class Throughput:
    """Training tokens per second and where the figure comes from (shown beside the estimate)."""

    tokens_per_second: float
    source: str


@dataclass(frozen=True)
class TrainingEstimate:
    """How long a job takes here and what it costs on each GPU in the price table."""

    total_tokens: float
    parameters: int
    method: str
    training_flops: float
    throughput: Throughput | None  # None: not measured (`data prepare --no-calibrate`)
    seconds: float | None
    gpus: list[dict[str, Any]]  # the price table's rows with `hours` and `dollars` added


# Gradient checkpointing runs each forward pass twice; tokens/s falls by about a quarter.
CHECKPOINTING_SLOWDOWN = 0.75


def median_throughput(measured: list[float]) -> Throughput | None:
    """The median tokens/s of earlier runs (the mean of the middle two for an even count); None without runs."""
    if not measured:
        return None
    source = f"median of {len(measured)} earlier run(s) of this model and method"
    return Throughput(statistics.median(measured), source)


def estimate_training(
    total_tokens: float,
    parameters: int,
    method: str,
    throughput: Throughput | None,
    gpus: list[dict[str, Any]],
    *,
    gradient_checkpointing: bool,
) -> TrainingEstimate:
    """Seconds at `throughput` (slowed by checkpointing's second forward), and GPU-hours and dollars per GPU.

    Args:
        total_tokens: training tokens over the whole job (tokens per epoch × epochs, or the steps' share).
        parameters: the model's parameter count.
        method: `lora` or `full` (4 or 6 FLOPs per parameter and token).
        throughput: measured or calibrated tokens/s without checkpointing; None: no time here.
        gpus: rows of the price table (`load_gpu_prices`) to price; empty to price none.
        gradient_checkpointing: whether the step layout recomputes activations.
    """
    if throughput is not None and gradient_checkpointing:
        throughput = Throughput(throughput.tokens_per_second * CHECKPOINTING_SLOWDOWN, throughput.source)
    flops = (4 if method == "lora" else 6) * parameters * total_tokens
    per_gpu = []
    for gpu in gpus:
        hours = flops / (gpu["bf16_tflops"] * 1e12 * gpu["mfu"]) / 3600
        per_gpu.append({**gpu, "hours": hours, "dollars": hours * gpu["price_per_hour"]})
    seconds = total_tokens / throughput.tokens_per_second if throughput is not None else None
    return TrainingEstimate(total_tokens, parameters, method, flops, throughput, seconds, per_gpu)


def cost_report(estimate: TrainingEstimate, train_tokens: int, epochs: float) -> dict[str, Any]:
    """The `estimate` section of the data report (report.json; rendered by `data.report`)."""
    throughput = estimate.throughput
    return {
        "train_tokens": train_tokens,
        "epochs": epochs,
        "total_tokens": estimate.total_tokens,
        "method": estimate.method,
        "parameters": estimate.parameters,
        "training_flops": estimate.training_flops,
        "cpu_tokens_per_second": throughput.tokens_per_second if throughput else None,
        "cpu_throughput_source": throughput.source if throughput else "not measured (--no-calibrate)",
        "cpu_minutes": estimate.seconds / 60 if estimate.seconds is not None else None,
        "gpus": estimate.gpus,
    }
