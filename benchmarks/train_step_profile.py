"""Where a tunesmith training step's time goes, and how fast it could be if only its matmuls took time.

One command:  .venv/bin/python benchmarks/train_step_profile.py [--examples 48] [--json-out FILE]

Runs tunesmith's trainer on the data, model and LoRA settings of `train_throughput.py` (GSM8K chats,
the embedded SmolLM2-135M-Instruct, r=16 on all linear layers, 8 examples per step) twice in one
process: once unprofiled (to warm up: the dropout mask's kernel compiles on the first step of a
process), then under `torch.profiler`. Steps are told apart by the optimizer's own profiler range: a
step runs from the end of one `optimizer.step()` to the end of the next, and the first
`WARMUP_STEPS` are left out, as in `train_throughput.py`.

For those steps it reports each category's share of the wall time (op self times, so nothing is counted
twice; "Python between ops" is the wall time no op accounts for) and the matmul-only ceiling:
tokens / time in matmuls, the speed the step would reach if everything but its matmuls were free.
The ceiling is what bounds goals stated as multiples of another trainer's speed. The profiler adds
its own cost per op, so the profiled tokens/s runs below `train_throughput.py`'s.

Results, dated, with their commands and machines: benchmarks/RESULTS.md ("Training step profile").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import LR, WARMUP_STEPS, run_arguments, write_data

# Op names (self time) by category; anything else is "other ops".
CATEGORIES = {
    "matmuls: linear layers and LM head": {"aten::mm", "aten::addmm", "aten::addmm_", "aten::matmul"},
    "matmuls: attention": {"aten::bmm", "aten::baddbmm"},
    "attention kernels (SDPA)": {
        "aten::_scaled_dot_product_flash_attention_for_cpu",
        "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
    },
    "softmax (attention and loss)": {"aten::_softmax", "aten::_softmax_backward_data"},
    "pointwise and reductions (norms, activation, dropout, rotary, loss)": {
        "aten::mul",
        "aten::mul_",
        "aten::add",
        "aten::add_",
        "aten::addcmul_",
        "aten::silu",
        "aten::silu_backward",
        "aten::sub",
        "aten::sub_",
        "aten::div",
        "aten::div_",
        "aten::neg",
        "aten::rsqrt",
        "aten::pow",
        "aten::mean",
        "aten::sum",
        "aten::exp",
        "aten::max",
        "aten::sqrt",
        "aten::fill_",
        "aten::zero_",
        "aten::where",
        "aten::gather",
        "aten::scatter_",
        "aten::lerp_",
        "aten::addcdiv_",
        "aten::linalg_vector_norm",
        "aten::clamp",
        "aten::clamp_",
        "aten::log",
    },  # fmt: skip
    "copies, casts, concatenation": {"aten::copy_", "aten::_to_copy", "aten::cat", "aten::clone"},
}
COMPILED = ("## Call CompiledFxGraph", "Torch-Compiled Region", "TorchDynamo", "AOTDispatcher", "Pregraph")
OPTIMIZER_RANGE = "Optimizer.step#"


def category(name: str) -> str:
    for label, names in CATEGORIES.items():
        if name in names:
            return label
    if name.startswith(COMPILED):
        return "compiled kernels (dropout masks) with their dispatch"
    if not name.startswith("aten::"):
        return "autograd functions' Python (fused layers, loss)"
    return "other ops (views, allocation, ...)"


def profile_training(data: dict[str, Path], steps: int, work: Path, model: str, batch: int) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from tunesmith.config import TrainSpec
    from tunesmith.train.sft import train_sft

    def spec(name: str, max_steps: int) -> TrainSpec:
        return TrainSpec(
            model=model, data=data["train"], max_steps=max_steps, batch_size=batch, lr=LR,
            eval_every=10**6, save_every=10**6, out=work / name, lora={"dropout": 0.05},
        )  # fmt: skip

    # Plain lines, not tunesmith's progress bar: its redraws would land in the profile.
    print("warm-up: one unprofiled step (the dropout mask kernel compiles here)", file=sys.stderr, flush=True)
    train_sft(spec("warm-up", 1), progress=False)
    print(
        f"profiling {steps} steps (the first {WARMUP_STEPS} are left out of the figures)",
        file=sys.stderr,
        flush=True,
    )
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        train_sft(spec("profiled", steps), progress=False)
    metrics = [json.loads(line) for line in (work / "profiled" / "metrics.jsonl").read_text().splitlines()]
    trained = [m["trained_tokens"] for m in metrics if "train_loss" in m]
    step_tokens = [b - a for a, b in zip([0, *trained], trained, strict=False)]

    events = [e for e in profiler.events() if e.device_type == torch.autograd.DeviceType.CPU]
    optimizer_steps = sorted(
        (e.time_range.start, e.time_range.end) for e in events if e.name.startswith(OPTIMIZER_RANGE)
    )
    if len(optimizer_steps) != steps:
        raise SystemExit(f"expected {steps} optimizer steps in the profile, found {len(optimizer_steps)}")
    # Step k (0-based) ends with the k-th optimizer step; measure steps WARMUP_STEPS.. only.
    start, end = optimizer_steps[WARMUP_STEPS - 1][1], optimizer_steps[-1][1]
    seconds: defaultdict[str, float] = defaultdict(float)
    by_op: defaultdict[str, float] = defaultdict(float)
    for event in events:
        if not start <= event.time_range.start < end:
            continue
        if any(s <= event.time_range.start < e for s, e in optimizer_steps[WARMUP_STEPS:]):
            label = "optimizer step (AdamW)"
        else:
            label = category(event.name)
        seconds[label] += event.self_cpu_time_total / 1e6
        by_op[event.name] += event.self_cpu_time_total / 1e6
    wall = (end - start) / 1e6
    seconds["Python between ops"] = wall - sum(seconds.values())
    tokens = sum(step_tokens[WARMUP_STEPS:])
    matmul = seconds["matmuls: linear layers and LM head"] + seconds["matmuls: attention"]
    return {
        "steps_measured": steps - WARMUP_STEPS,
        "tokens": tokens,
        "wall_seconds": round(wall, 3),
        "profiled_tokens_per_second": round(tokens / wall, 1),
        "matmul_only_ceiling_tokens_per_second": round(tokens / matmul, 1),
        "linear_matmul_only_ceiling_tokens_per_second": round(
            tokens / seconds["matmuls: linear layers and LM head"], 1
        ),
        "categories": {k: round(v, 3) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])},
        "top_ops": {k: round(v, 3) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])[:15]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    run_arguments(parser, examples=48)
    args = parser.parse_args()
    steps = args.examples // args.batch
    if steps <= WARMUP_STEPS:
        parser.error(f"--examples must give more than {WARMUP_STEPS} steps of --batch examples")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        data = write_data(work, args.examples, args.data)
        report = profile_training(data, steps, work, args.model, args.batch)
    report["run_seconds"] = round(time.perf_counter() - started, 1)
    wall = report["wall_seconds"]
    print(f"{report['steps_measured']} steps after warm-up, {report['tokens']} tokens, {wall:.2f} s profiled")
    print(f"{'category':68s} {'s':>7s} {'share':>7s}")
    for label, value in report["categories"].items():
        print(f"{label:68s} {value:7.2f} {value / wall:7.1%}")
    print(f"profiled tokens/s                 {report['profiled_tokens_per_second']:8.1f}")
    print(f"matmul-only ceiling tokens/s      {report['matmul_only_ceiling_tokens_per_second']:8.1f}")
    print(f"  linear layers' matmuls only     {report['linear_matmul_only_ceiling_tokens_per_second']:8.1f}")
    print("top ops by self time (s): " + ", ".join(f"{k} {v:.2f}" for k, v in report["top_ops"].items()))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
