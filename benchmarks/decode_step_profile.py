"""Where a decode step's time goes on the embedded model, and which matmul kernel a decode row wants.

One command:  .venv/bin/python benchmarks/decode_step_profile.py [--threads 1]

1. The measured copy bandwidth and the bytes of weights one decoded token reads (the bandwidth bound).
2. A decode step of the embedded SmolLM2-135M-Instruct through transformers with a `DynamicCache`
   (the engine's path before the fast decode path), fp32 and bf16, 1 and 16 rows: ms per step and the
   top operators by self time (matmuls, KV-cache concatenation, attention, the rest is Python).
3. Every linear layer of the model once, at 1/16/64 rows, through `F.linear`, `torch.mv` and
   `torch.addmv`, fp32 and bf16: on CPUs with AVX512-BF16/AMX, bf16 `F.linear` of one row is slow
   (oneDNN's small-M path) while `mv` reads the bf16 weights at bandwidth.
Results: benchmarks/RESULTS.md ("Decode step profile").
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from transformers import DynamicCache

from tunesmith.models.loading import load_model, resolve_model


def copy_bandwidth() -> float:
    """GB/s of a 64 MiB copy (bytes read + written), median of 10."""
    source = torch.empty(64 * 2**20, dtype=torch.uint8)
    target = torch.empty_like(source)
    return 2 * source.numel() / _median(lambda: target.copy_(source), 10) / 1e9


def _median(function: Callable[[], object], repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


@torch.inference_mode()
def profile_steps(model: torch.nn.Module, rows: int, context: int = 100, steps: int = 8) -> None:
    ids = torch.randint(0, 1000, (rows, context))
    mask = torch.ones(rows, context, dtype=torch.long)
    cache = DynamicCache()
    logits = model(input_ids=ids, attention_mask=mask, cache=cache, logits_to_keep=1).logits
    token = logits[:, -1].argmax(-1, keepdim=True)
    position = torch.full((rows, 1), context - 1)
    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], -1)
            position = position + 1
            logits = model(
                input_ids=token, attention_mask=mask, position_ids=position, cache=cache,
                logits_to_keep=1,
            ).logits  # fmt: skip
            token = logits[:, -1].argmax(-1, keepdim=True)
    step = (time.perf_counter() - started) / steps
    print(f"  rows {rows}: {step * 1e3:.1f} ms/step (profiled), {rows / step:.1f} tokens/s")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


def linear_kernels(model: torch.nn.Module, dtype: torch.dtype) -> None:
    weights = [m.weight.to(dtype) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for rows in (1, 16, 64):
        inputs = {w.shape[1]: torch.randn(rows, w.shape[1], dtype=dtype) for w in weights}
        kernels: dict[str, Callable[[], object]] = {
            "linear": lambda inputs=inputs: [F.linear(inputs[w.shape[1]], w) for w in weights],
        }
        if rows == 1:
            kernels["mv"] = lambda inputs=inputs: [torch.mv(w, inputs[w.shape[1]][0]) for w in weights]
        for name, function in kernels.items():
            seconds = _median(function, 5)
            print(
                f"  {dtype} rows {rows:2d} {name:6s} {seconds * 1e3:7.1f} ms, {rows / seconds:7.1f} tokens/s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_model("smollm2-135m-instruct")
    bandwidth = copy_bandwidth()
    print(f"copy bandwidth {bandwidth:.1f} GB/s")
    for dtype in (torch.float32, torch.bfloat16):
        model = load_model(path, dtype=dtype).eval()
        size = sum(
            p.numel() * p.element_size() for p in model.parameters()
        )  # tied: lm_head reads the embedding
        print(
            f"{dtype}: {size / 1e6:.0f} MB of weights per token, bound {bandwidth * 1e9 / size:.1f} tokens/s"
        )
        for rows in (1, 16):
            profile_steps(model, rows)
        linear_kernels(model, dtype)


if __name__ == "__main__":
    main()
