"""Training throughput in 1 and several processes: `tunesmith train` against `tunesmith train --nproc N`.

One command:  .venv/bin/python benchmarks/distributed_scaling.py [--processes 1,2] [--steps 12]
              [--tuning lora|full] [--strategy auto|ddp|fsdp] [--json-out FILE]

Workload: the demo chats (tunesmith/data/demo/train.jsonl), the embedded SmolLM2-135M-Instruct (`--model`
for another), LoRA r=16 on all linear layers, dropout 0.05 (or `--tuning full`: every weight trained), no
validation, the same global step in every configuration (`--batch` examples x `--grad-accum`), `--steps`
optimizer steps. 1 is the one-process path (no torchrun); N > 1 launches N processes through `--nproc N`,
each taking its share of every step, gloo on CPU, nccl (one process per GPU) on CUDA: on a GPU machine
`--processes 1,2,4,8` compares GPUs. `--strategy` is the `distributed.strategy` of the N > 1 runs (auto:
ddp for LoRA, fsdp, weights sharded, for full fine-tuning).

Reports useful tokens/s (non-padding tokens of every process over rank 0's step time, which includes
waiting for the gradient all-reduce) after `WARMUP_STEPS` warm-up steps, read from the run's
metrics.jsonl, the wall time of the whole command (start-up and loading included), and the ratio to one
process. On a CPU each process runs one thread (OMP_NUM_THREADS=1), so N processes use N cores where one
process used one: the comparison is of cores used through processes, not free speed.

Results, dated, with their commands and machines: benchmarks/RESULTS.md ("Distributed training").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "tunesmith" / "data" / "demo" / "train.jsonl"
WARMUP_STEPS = 2


def run_configuration(processes: int, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Train once in `processes` processes; tokens/s after warm-up from metrics.jsonl, and wall time."""
    out = folder / f"nproc-{processes}"
    command = [
        sys.executable, "-m", "tunesmith", "train", "--model", args.model, "--data", str(args.data),
        "--no-val", "--max-steps", str(args.steps), "--batch-size", str(args.batch),
        "--grad-accum", str(args.grad_accum), "--save-every", str(args.steps + 1), "--seed", "0",
        "--out", str(out), "--json",
    ]  # fmt: skip
    if args.tuning == "full":
        command += ["--tuning", "full"]
    if processes > 1:
        config = folder / "distributed.yaml"  # the strategy has no flag: a config the flags complete
        config.write_text(f"train:\n  distributed:\n    strategy: {args.strategy}\n", encoding="utf-8")
        command += ["--nproc", str(processes), "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNESMITH_HOME": str(folder / "home")}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"nproc {processes} failed:\n{done.stderr[-3000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [line for line in lines if "tokens_per_second" in line]
    tokens, seconds, previous = 0, 0.0, 0
    for line in steps:
        step_tokens = line["trained_tokens"] - previous
        previous = line["trained_tokens"]
        if line["step"] > WARMUP_STEPS:
            tokens += step_tokens
            seconds += step_tokens / line["tokens_per_second"]
    summary = json.loads(done.stdout)
    return {
        "processes": processes,
        "tuning": args.tuning,
        "strategy": "-" if processes == 1 else _strategy(args),
        "device": summary["device"],
        "tokens_per_second": round(tokens / seconds, 1),
        "wall_seconds": round(wall, 1),
        "train_loss": summary["train_loss"],
        "trained_tokens": summary["trained_tokens"],
    }


def _strategy(args: argparse.Namespace) -> str:
    if args.strategy != "auto":
        return str(args.strategy)
    return "fsdp" if args.tuning == "full" else "ddp"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (GPUs on CUDA)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", type=Path, default=DEMO)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=4, help="examples per micro-batch")
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--tuning", choices=["lora", "full"], default="lora")
    parser.add_argument("--strategy", choices=["auto", "ddp", "fsdp"], default="auto", help="of N > 1 runs")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="distributed-scaling-") as folder:
        for processes in [int(count) for count in args.processes.split(",")]:
            results.append(run_configuration(processes, args, Path(folder)))
            print(json.dumps(results[-1]), file=sys.stderr)
    base = results[0]["tokens_per_second"]
    print(
        f"{'processes':>9} {'tuning':>6} {'strategy':>8} {'device':>6} {'tokens/s':>9} {'vs first':>8} "
        f"{'wall s':>7} {'train loss':>10}"
    )
    for row in results:
        print(
            f"{row['processes']:>9} {row['tuning']:>6} {row['strategy']:>8} {row['device']:>6} "
            f"{row['tokens_per_second']:>9,.0f} "
            f"{row['tokens_per_second'] / base:>7.2f}x {row['wall_seconds']:>7.1f} {row['train_loss']:>10.4f}"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
