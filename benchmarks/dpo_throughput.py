"""DPO throughput: tunesmith against TRL's DPOTrainer on the same pairs, model and LoRA, in one run.

One command:  .venv/bin/python benchmarks/dpo_throughput.py [--examples 32] [--json-out FILE]

Data: the first `--examples` GSM8K training problems (../shared/datasets/gsm8k) as preference pairs:
the prompt is the question, chosen its worked answer, rejected the next problem's answer (a wrong
answer of the same kind and length), plus the next 32 as validation pairs. Model: the embedded
SmolLM2-135M-Instruct. LoRA r=16, alpha=32, dropout 0 (TRL's DPOTrainer disables dropout by default) on
all linear layers, beta 0.1, lr 5e-5, 8 pairs per step, one epoch, for every config.

Configurations, each in its own process (so peak RSS is its own):
- tunesmith-dpo: `tunesmith train --method dpo`; reference log-probabilities computed once before the
  first step (their time is reported apart, as `reference_seconds`);
- tunesmith-sft: SFT on the same sequences (each pair's chosen and rejected conversations as two
  examples): the same tokens, for the cost of a DPO step against an SFT step;
- trl-defaults: DPOTrainer with its defaults (gradient checkpointing on, padded batches, the reference
  recomputed with the adapter disabled every step), bf16 as TRL's SFT benchmark runs it;
- trl-best: no gradient checkpointing and reference log-probabilities precomputed before training
  (`precompute_ref_log_probs`), the fastest settings TRL offers on a CPU (its padding-free batches need
  flash-attention's CUDA kernels; without them they are slower and far larger, see `run_trl`).
Each reports useful tokens/s after warm-up (the real tokens of both sequences of every pair trained on,
first 2 steps excluded), MFU (tokens/s x 4N FLOPs, LoRA's forward and activation gradients, over the
bf16 matmul peak measured in the same run; reference forwards are not counted as useful work), peak RSS,
and the held-out preference accuracy after the same pairs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from train_throughput import GSM8K, WARMUP_STEPS, measure_matmul_peaks

VAL_PAIRS = 32
BATCH = 8
LR = 5e-5
BETA = 0.1
CONFIGS = ("tunesmith-dpo", "tunesmith-sft", "trl-defaults", "trl-best")


def write_pairs(directory: Path, examples: int, source: Path) -> dict[str, Path]:
    if not source.is_file():
        sys.exit(f"GSM8K not found at {source} (the project's shared datasets)")
    rows = [
        json.loads(line)
        for line in source.read_text(encoding="utf-8").splitlines()[: examples + VAL_PAIRS + 1]
    ]
    paths = {}
    for split, first, count in (("train", 0, examples), ("val", examples, VAL_PAIRS)):
        pairs = [
            {"prompt": rows[i]["question"], "chosen": rows[i]["answer"], "rejected": rows[i + 1]["answer"]}
            for i in range(first, first + count)
        ]
        paths[split] = directory / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(pair) + "\n" for pair in pairs), encoding="utf-8")
        chats = [
            {
                "messages": [
                    {"role": "user", "content": p["prompt"]},
                    {"role": "assistant", "content": p[side]},
                ]
            }
            for p in pairs
            for side in ("chosen", "rejected")
        ]
        paths[f"{split}_sft"] = directory / f"{split}_sft.jsonl"
        paths[f"{split}_sft"].write_text("".join(json.dumps(chat) + "\n" for chat in chats), encoding="utf-8")
    return paths


def run_tunesmith(
    data: dict[str, Path], steps: int, work: Path, model: str, batch: int, name: str
) -> dict[str, Any]:
    from tunesmith.config import TrainSpec
    from tunesmith.train.dpo import train_dpo
    from tunesmith.train.sft import train_sft

    out = work / f"{name}-run"
    sft = name == "tunesmith-sft"
    spec = TrainSpec(
        model=model, method="sft" if sft else "dpo", data=data["train_sft" if sft else "train"],
        val_data=data["val_sft" if sft else "val"], max_steps=steps, batch_size=batch * (2 if sft else 1),
        lr=LR, beta=BETA, eval_every=10**6, save_every=10**6, out=out, lora={"dropout": 0.0},
    )  # fmt: skip
    result = (train_sft if sft else train_dpo)(spec, progress=False)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps_log = [m for m in metrics if "train_loss" in m]
    step_tokens = [
        b["trained_tokens"] - a["trained_tokens"]
        for a, b in zip([{"trained_tokens": 0}] + steps_log, steps_log, strict=False)
    ]
    step_seconds = [tokens / m["tokens_per_second"] for tokens, m in zip(step_tokens, steps_log, strict=True)]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    reference = [e for e in events if e["message"].startswith("reference log-probabilities")]
    running = [e for e in events if e["type"] == "running"]
    reference_seconds = (
        (
            datetime.fromisoformat(running[0]["created_at"])
            - datetime.fromisoformat(reference[0]["created_at"])
        ).total_seconds()
        if reference
        else 0.0
    )
    validation = [m for m in metrics if "val_loss" in m][-1]
    return {
        "step_seconds": step_seconds,
        "exact_tokens_after_warmup": sum(step_tokens[WARMUP_STEPS:]),
        "preference_accuracy": validation.get("val_preference_accuracy"),
        "reward_margin": validation.get("val_reward_margin"),
        "precision": result.precision,
        "reference_seconds": round(reference_seconds, 1),
    }


class _PairTokenCounter:
    """Wraps DPOTrainer's collator and records each batch's real tokens (both sequences of each pair)."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate
        self.tokens: list[int] = []

    def __call__(self, examples: list[dict[str, Any]]) -> Any:
        self.tokens.append(
            sum(2 * len(e["prompt_ids"]) + len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples)
        )
        return self.collate(examples)


def run_trl(
    data: dict[str, Path], steps: int, work: Path, name: str, model: str, batch: int
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from tunesmith.models.loading import default_device, resolve_model, supports_fast_bf16

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)

    def rows(split: str) -> list[dict[str, Any]]:
        pairs = [json.loads(line) for line in data[split].read_text().splitlines()]
        return [
            {"prompt": [{"role": "user", "content": p["prompt"]}],
             "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}]}
            for p in pairs
        ]  # fmt: skip

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    # As in train_throughput.py: TRL's bf16 default needs `use_cpu=True` said explicitly on a CPU.
    device = default_device()
    tuned: dict[str, Any] = (
        {"bf16": False} if not supports_fast_bf16(device) else {"use_cpu": True} if device == "cpu" else {}
    )
    if name == "trl-best":
        # Not `padding_free`: without flash-attention's variable-length kernels (CUDA only) transformers
        # attends over the whole packed block densely; on this CPU one step had reached 11.9 GB RSS and not
        # finished after 5 minutes (2026-12-01), slower than the defaults.
        tuned |= {"gradient_checkpointing": False, "precompute_ref_log_probs": True}
    config = DPOConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
        max_steps=steps, learning_rate=LR, beta=BETA, logging_steps=1, report_to="none", save_strategy="no",
        seed=42, dataloader_num_workers=0, **tuned,
    )  # fmt: skip
    timer = StepTimer()
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), args=config,
        train_dataset=Dataset.from_list(rows("train")), eval_dataset=Dataset.from_list(rows("val")),
        processing_class=tokenizer, peft_config=lora, callbacks=[timer],
    )  # fmt: skip
    counter = _PairTokenCounter(trainer.data_collator)
    trainer.data_collator = counter
    started = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - started
    evaluation = trainer.evaluate()
    return {
        "step_seconds": timer.seconds,
        "exact_tokens_after_warmup": sum(counter.tokens[:steps][WARMUP_STEPS:]),
        "preference_accuracy": evaluation.get("eval_rewards/accuracies"),
        "reward_margin": evaluation.get("eval_rewards/margins"),
        "precision": "bf16" if config.bf16 else "fp32",
        # precomputing the reference runs inside train(), before the first step
        "reference_seconds": round(train_seconds - sum(timer.seconds), 1) if name == "trl-best" else 0.0,
    }


def run_one(
    name: str, data: dict[str, Path], steps: int, work: Path, model: str, batch: int
) -> dict[str, Any]:
    if name.startswith("tunesmith"):
        result = run_tunesmith(data, steps, work, model, batch, name)
    else:
        result = run_trl(data, steps, work, name, model, batch)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def summarise(name: str, raw: dict[str, Any], parameters: int, peak: float) -> dict[str, Any]:
    seconds = raw["step_seconds"]
    tokens_per_second = raw["exact_tokens_after_warmup"] / sum(seconds[WARMUP_STEPS:])
    return {
        "config": name,
        "precision": raw["precision"],
        "tokens_per_second": round(tokens_per_second, 1),
        "mfu": round(tokens_per_second * 4 * parameters / (peak * 1e9), 4),
        "peak_rss_mb": round(raw["peak_rss_mb"]),
        "reference_seconds": raw["reference_seconds"],
        "preference_accuracy": raw["preference_accuracy"],
        "reward_margin": raw["reward_margin"],
        "steps": len(seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=32, help="training pairs (a multiple of --batch)")
    parser.add_argument("--batch", type=int, default=BATCH, help="pairs per optimizer step")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="catalog name or model directory")
    parser.add_argument(
        "--data", type=Path, default=GSM8K, help="GSM8K train.jsonl (default: shared datasets)"
    )
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help="comma-separated subset of " + ", ".join(CONFIGS)
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the results here")
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.examples // args.batch
    if args.only:  # child process: one configuration
        data = {name: args.work / f"{name}.jsonl" for name in ("train", "val", "train_sft", "val_sft")}
        print(json.dumps(run_one(args.only, data, steps, args.work, args.model, args.batch)))
        return

    from tunesmith.models.loading import default_device, load_model, resolve_model

    device = default_device()
    peaks = measure_matmul_peaks(device)
    peak = peaks["bf16"]
    parameters = sum(p.numel() for p in load_model(resolve_model(args.model)).parameters())
    results = []
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        write_pairs(work, args.examples, args.data)
        for name in args.configs.split(","):
            started = time.perf_counter()
            child = subprocess.run(
                [sys.executable, __file__, "--only", name, "--work", str(work), "--examples", str(args.examples),
                 "--batch", str(args.batch), "--model", args.model],
                capture_output=True, text=True,
            )  # fmt: skip
            if child.returncode != 0:
                print(f"{name}: failed\n{child.stderr[-3000:]}", file=sys.stderr)
                continue
            summary = summarise(name, json.loads(child.stdout.strip().splitlines()[-1]), parameters, peak)
            summary["wall_seconds"] = round(time.perf_counter() - started, 1)
            results.append(summary)
            print(json.dumps(summary), file=sys.stderr, flush=True)
    by_name = {r["config"]: r for r in results}
    ratios = {}
    if "tunesmith-dpo" in by_name:
        dpo = by_name["tunesmith-dpo"]
        for other in ("trl-defaults", "trl-best"):
            if other in by_name:
                ratios[f"speed_vs_{other}"] = round(
                    dpo["tokens_per_second"] / by_name[other]["tokens_per_second"], 2
                )
                ratios[f"rss_vs_{other}"] = round(dpo["peak_rss_mb"] / by_name[other]["peak_rss_mb"], 2)
        if "tunesmith-sft" in by_name:  # seconds per token of a DPO step over an SFT step's
            ratios["dpo_step_cost_vs_sft"] = round(
                by_name["tunesmith-sft"]["tokens_per_second"] / dpo["tokens_per_second"], 2
            )
    report = {
        "device": device,
        "pairs": args.examples,
        "batch": args.batch,
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "results": results,
        "ratios": ratios,
    }
    print(f"GSM8K pairs, {args.examples} pairs, bf16 matmul peak {peak:.0f} GFLOP/s")
    print(
        f"{'config':<16}{'prec':>6}{'tok/s':>9}{'MFU':>8}{'RSS MB':>9}{'ref s':>8}{'pref acc':>10}{'wall s':>9}"
    )
    for r in results:
        accuracy = f"{r['preference_accuracy']:.3f}" if r["preference_accuracy"] is not None else "-"
        print(f"{r['config']:<16}{r['precision']:>6}{r['tokens_per_second']:>9}{r['mfu']:>8.1%}{r['peak_rss_mb']:>9}"
              f"{r['reference_seconds']:>8}{accuracy:>10}{r['wall_seconds']:>9}")  # fmt: skip
    print(json.dumps(ratios))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
