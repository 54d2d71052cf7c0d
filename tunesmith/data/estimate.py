"""Training cost and time estimate for a prepared dataset.

Owns: the model's parameter count (from safetensors headers, no weights loaded), CPU throughput
(the median of earlier runs of the same model in the registry, else a short measured calibration),
and minutes here plus GPU-hours and dollars on common GPUs, priced from an editable YAML table.
Does not own: training. Training FLOPs are 6 × parameters per token for full fine-tuning and
4 × for LoRA (no weight gradients for the frozen base), attention not counted.
"""

from __future__ import annotations

import json
import statistics
import time
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


def registry_throughput(runs: list[dict[str, Any]], model: str, method: str) -> float | None:
    """Median training tokens/s of earlier succeeded CPU runs of `model` with `method` (None: no such run).

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
    return statistics.median(speeds) if speeds else None


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


def estimate_cost(
    train_tokens: int,
    epochs: float,
    parameters: int,
    method: str,
    cpu_tokens_per_second: float | None,
    throughput_source: str,
    gpus: list[dict[str, Any]],
) -> dict[str, Any]:
    """Tokens × epochs, minutes on this machine, and GPU-hours and dollars per GPU in the table."""
    tokens = train_tokens * epochs
    flops = (4 if method == "lora" else 6) * parameters * tokens
    per_gpu = []
    for gpu in gpus:
        hours = flops / (gpu["bf16_tflops"] * 1e12 * gpu["mfu"]) / 3600
        per_gpu.append({**gpu, "hours": hours, "dollars": hours * gpu["price_per_hour"]})
    return {
        "train_tokens": train_tokens,
        "epochs": epochs,
        "total_tokens": tokens,
        "method": method,
        "parameters": parameters,
        "training_flops": flops,
        "cpu_tokens_per_second": cpu_tokens_per_second,
        "cpu_throughput_source": throughput_source,
        "cpu_minutes": tokens / cpu_tokens_per_second / 60 if cpu_tokens_per_second else None,
        "gpus": per_gpu,
    }
