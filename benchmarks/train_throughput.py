"""Training throughput: tunesmith against TRL's SFTTrainer on the same data, model and LoRA.

One command:  .venv/bin/python benchmarks/train_throughput.py [--examples 32] [--json-out FILE]

Data: the first `--examples` GSM8K training problems (from ../shared/datasets/gsm8k) as user/assistant
chats, plus the next 32 as a validation set. Model: the embedded SmolLM2-135M-Instruct. LoRA r=16,
alpha=32, dropout 0.05 on all linear layers, lr 2e-4, 8 examples per step, one epoch, for every config.
`--model DIR --data FILE --batch N` run it on other machines (`benchmarks/gpu_kit.sh` for a lent GPU).

Each configuration runs in its own process (so peak RSS is its own) and reports:
- useful tokens/s after warm-up (non-padding tokens of the examples trained on, first 2 steps excluded);
- MFU: tokens/s x 4N FLOPs (LoRA: forward 2N + activation gradients 2N) over the matmul peak measured
  in the same run (bf16);
- peak RSS (GPU allocator peak on CUDA) beside tunesmith's own estimate, and the validation loss after
  the same examples (completion/assistant tokens only), as each trainer reports it and evaluated alike
  in fp32 (`fp32 val`).

Tokens are counted exactly for every trainer: tunesmith's from its metrics.jsonl, TRL's by wrapping its
data collator, which sees each batch's examples before padding. `tokens_per_second_scaled` (printed for
every trainer) is the older count, TRL's epoch tokens scaled by its share of steps after warm-up, which
results before the sixth session used.

Results, dated, with their commands and machines: benchmarks/RESULTS.md ("Training throughput").
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GSM8K = REPO.parent / "shared" / "datasets" / "gsm8k" / "train.jsonl"
WARMUP_STEPS = 2
VAL_EXAMPLES = 32
BATCH = 8
LR = 2e-4
CONFIGS = ("tunesmith", "trl-defaults", "trl-best")
# Opt in with --configs; a tunesmith variant may combine these words: tunesmith-unfused-no-dropout.
# fused / unfused: fused layers on / off everywhere (default: auto, see TrainSpec.fused_layers).
# trl-fp32: TRL's defaults with bf16 off, as TRL ran by default before its bf16 default (the nearest
# to issue 6's "about 70 with default settings": benchmarks/RESULTS.md).
EXTRA_CONFIGS = (
    "tunesmith-compile", "tunesmith-no-dropout", "tunesmith-unfused", "tunesmith-fused", "trl-fp32"
)  # fmt: skip


def measure_matmul_peaks(device: str) -> dict[str, float]:
    """GFLOP/s of a square matmul in fp32 and bf16 on `device`, each timed for about 3 s."""
    import torch

    from tunesmith.train.plan import measure_matmul_peak

    return {
        name: measure_matmul_peak(device, dtype, seconds=3) / 1e9
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
    }


def write_data(directory: Path, examples: int, source: Path) -> dict[str, Path]:
    if not source.is_file():
        sys.exit(f"GSM8K not found at {source} (the project's shared datasets)")
    rows = [
        json.loads(line)
        for line in source.read_text(encoding="utf-8").splitlines()[: examples + VAL_EXAMPLES]
    ]
    paths = {}
    for split, part in (("train", rows[:examples]), ("val", rows[examples:])):
        chats = [
            {
                "messages": [
                    {"role": "user", "content": r["question"]},
                    {"role": "assistant", "content": r["answer"]},
                ]
            }
            for r in part
        ]
        paths[split] = directory / f"{split}.jsonl"
        paths[split].write_text("".join(json.dumps(chat) + "\n" for chat in chats), encoding="utf-8")
    return paths


def run_tunesmith(
    data: dict[str, Path], steps: int, work: Path, model: str, batch: int, variant: str
) -> dict[str, Any]:
    from tunesmith.config import TrainSpec
    from tunesmith.train.sft import train_sft

    words = variant.split("-")
    no_dropout = "no-dropout" in variant  # two words; "unfused"/"fused" and "compile" are one each
    spec = TrainSpec(
        model=model, data=data["train"], val_data=data["val"], max_steps=steps, batch_size=batch, lr=LR,
        eval_every=10**6, save_every=10**6, out=work / f"tunesmith-{variant or 'default'}-run", compile="compile" in words,
        lora={"dropout": 0.0 if no_dropout else 0.05},
        fused_layers="off" if "unfused" in words else "on" if "fused" in words else "auto",
    )  # fmt: skip
    result = train_sft(spec, progress=False)
    metrics = [
        json.loads(line)
        for line in (work / f"tunesmith-{variant or 'default'}-run" / "metrics.jsonl")
        .read_text()
        .splitlines()
    ]
    steps_log = [m for m in metrics if "train_loss" in m]
    step_tokens = [
        b["trained_tokens"] - a["trained_tokens"]
        for a, b in zip([{"trained_tokens": 0}] + steps_log, steps_log, strict=False)
    ]
    step_seconds = [tokens / m["tokens_per_second"] for tokens, m in zip(step_tokens, steps_log, strict=True)]
    return {
        "total_tokens": result.trained_tokens,
        "step_seconds": step_seconds,
        "exact_tokens_after_warmup": sum(step_tokens[WARMUP_STEPS:]),
        "val_loss": result.val_loss,
        "precision": result.precision,
        "estimated_peak_gb": json.loads(
            (work / f"tunesmith-{variant or 'default'}-run" / "plan.json").read_text()
        )["memory_gb"]["total"],
        "micro_batch_tokens": result.micro_batch_tokens,
        "adapter_dir": str(work / f"tunesmith-{variant or 'default'}-run" / "adapter"),
    }


class _TokenCounter:
    """Wraps a data collator and records each batch's real (non-padding) tokens, batch by batch."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate
        self.tokens: list[int] = []

    def __call__(self, examples: list[dict[str, Any]]) -> Any:
        self.tokens.append(sum(len(example["input_ids"]) for example in examples))
        return self.collate(examples)


def run_trl(
    data: dict[str, Path], steps: int, work: Path, name: str, model: str, batch: int
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.loading import default_device, resolve_model, supports_fast_bf16

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)

    def rows(split: str) -> list[dict[str, Any]]:
        chats = [json.loads(line)["messages"] for line in data[split].read_text().splitlines()]
        return [{"prompt": chat[:1], "completion": chat[1:]} for chat in chats]

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    # TRL's own default, bf16=True, refuses to start where bf16 is not native ("Your setup doesn't
    # support bf16/gpu"), so there "defaults" turns only that off and keeps the rest (gradient
    # checkpointing on, padded batches). "best" = what measured fastest: also no checkpointing,
    # padding-free batches (transformers builds block-diagonal masks from position ids for SDPA).
    # On a CPU with native bf16, TRL keeps bf16 but insists on `use_cpu=True` being said explicitly.
    device = default_device()
    native_bf16 = supports_fast_bf16(device)
    tuned: dict[str, Any] = (
        {"bf16": False} if not native_bf16 else {"use_cpu": True} if device == "cpu" else {}
    )
    if name == "trl-fp32":
        tuned = {"bf16": False}
    if name == "trl-best":
        tuned |= {"gradient_checkpointing": False, "padding_free": True, "max_length": None}
    config = SFTConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
        max_steps=steps, learning_rate=LR, logging_steps=1, report_to="none", save_strategy="no",
        seed=42, dataloader_num_workers=0, **tuned,
    )  # fmt: skip
    timer = StepTimer()
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=Dataset.from_list(rows("train")),
        eval_dataset=Dataset.from_list(rows("val")), processing_class=tokenizer, peft_config=lora, callbacks=[timer],
    )  # fmt: skip
    counter = _TokenCounter(trainer.data_collator)
    trainer.data_collator = counter  # the train dataloader is built in train(), from this attribute
    trainer.train()
    step_tokens = counter.tokens[:steps]  # accelerate may collate one batch ahead: drop it
    trainer.model.save_pretrained(str(work / f"{name}-adapter"))
    total_tokens = sum(
        len(
            tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)[
                "input_ids"
            ]
        )
        for r in rows("train")
    )
    return {
        "total_tokens": total_tokens,
        "step_seconds": timer.seconds,
        "exact_tokens_after_warmup": sum(step_tokens[WARMUP_STEPS:]),
        "val_loss": trainer.evaluate()["eval_loss"],
        "precision": "bf16" if config.bf16 else "fp32",
        "adapter_dir": str(work / f"{name}-adapter"),
    }


def run_one(
    name: str, data: dict[str, Path], steps: int, work: Path, model: str, batch: int
) -> dict[str, Any]:
    import torch

    if name.startswith("tunesmith"):
        result = run_tunesmith(data, steps, work, model, batch, name.removeprefix("tunesmith").strip("-"))
    else:
        result = run_trl(data, steps, work, name, model, batch)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    # after the peaks are read: the evaluation's own model must not count as the trainer's memory
    result["val_loss_fp32"] = fp32_val_loss(model, Path(result.pop("adapter_dir")), data["val"])
    return result


def fp32_val_loss(model: str, adapter_dir: Path, val_path: Path) -> float:
    """Loss per assistant token on the validation chats, every trainer's adapter evaluated alike.

    In fp32, one example at a time, with tunesmith's rendering: each trainer also reports the loss its
    own evaluation computes (in bf16 where it trains in bf16), and a bf16 evaluation through peft drops
    LoRA deltas under half a bf16 step (`tunesmith.lora.rounding`), so those can differ by more
    than the adapters do.
    """
    import torch

    from tunesmith.data.ingest import load_split
    from tunesmith.data.render import IGNORE_INDEX, render_example
    from tunesmith.models.adapters import load_adapter
    from tunesmith.models.loading import default_device, load_model, load_tokenizer, resolve_model

    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    peft_model = load_adapter(load_model(path, dtype=torch.float32), adapter_dir).to(default_device()).eval()
    examples, _ = load_split(val_path, "val")
    total, tokens = 0.0, 0
    device = next(peft_model.parameters()).device
    with torch.no_grad():
        for example in examples:
            rendered = render_example(tokenizer, example, 1024)
            logits = peft_model(input_ids=torch.tensor([rendered.input_ids], device=device)).logits[0]
            targets = torch.tensor(rendered.targets, device=device)
            total += float(
                torch.nn.functional.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, reduction="sum")
            )
            tokens += int((targets != IGNORE_INDEX).sum())
    return total / tokens


def summarise(name: str, raw: dict[str, Any], parameters: int, peak: float) -> dict[str, Any]:
    seconds = raw["step_seconds"]
    share_after = (len(seconds) - WARMUP_STEPS) / len(seconds)
    scaled = raw["total_tokens"] * share_after / sum(seconds[WARMUP_STEPS:])
    tokens_per_second = raw["exact_tokens_after_warmup"] / sum(seconds[WARMUP_STEPS:])
    return {
        "config": name,
        "precision": raw["precision"],
        "tokens_per_second": round(tokens_per_second, 1),
        "tokens_per_second_scaled": round(scaled, 1),
        "mfu": round(tokens_per_second * 4 * parameters / (peak * 1e9), 4),
        "peak_rss_mb": round(raw["peak_rss_mb"]),
        "peak_gpu_mb": round(raw["peak_gpu_mb"]) if "peak_gpu_mb" in raw else None,
        "estimated_peak_gb": raw.get("estimated_peak_gb"),  # tunesmith's plan, before the run
        "val_loss": round(raw["val_loss"], 4),  # as the trainer itself reports it
        "val_loss_fp32": round(raw["val_loss_fp32"], 4),  # every adapter evaluated alike
        "steps": len(seconds),
        "first_step_seconds": round(seconds[0], 1),  # includes torch.compile's compile time
    }


def run_arguments(parser: argparse.ArgumentParser, examples: int) -> None:
    """The arguments this benchmark shares with `train_step_profile.py`: data size, batch, model, data."""
    parser.add_argument(
        "--examples", type=int, default=examples, help="training examples (a multiple of --batch)"
    )
    parser.add_argument("--batch", type=int, default=BATCH, help="examples per optimizer step")
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="catalog name or model directory (default: embedded)"
    )
    parser.add_argument(
        "--data", type=Path, default=GSM8K, help="GSM8K train.jsonl (default: shared datasets)"
    )
    parser.add_argument("--json-out", type=Path, default=None, help="also write the results here")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    run_arguments(parser, examples=32)
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help="comma-separated subset of " + ", ".join(CONFIGS + EXTRA_CONFIGS),
    )
    parser.add_argument("--only", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.examples // args.batch
    if args.only:  # child process: one configuration
        data = {"train": args.work / "train.jsonl", "val": args.work / "val.jsonl"}
        print(json.dumps(run_one(args.only, data, steps, args.work, args.model, args.batch)))
        return

    from tunesmith.models.loading import default_device, load_model, resolve_model

    device = default_device()
    peaks = measure_matmul_peaks(device)
    peak = peaks["bf16"]  # MFU against the bf16 matmul peak, as the goal is stated
    parameters = sum(p.numel() for p in load_model(resolve_model(args.model)).parameters())
    results = []
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        write_data(work, args.examples, args.data)
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
    report = {
        "device": device,
        "examples": args.examples,
        "batch": args.batch,
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "results": results,
    }
    memory = "GPU MB" if device != "cpu" else "RSS MB"
    header = f"{'config':<22}{'prec':>6}{'tok/s':>9}{'MFU':>8}{memory:>9}{'est GB':>8}{'val loss':>10}{'fp32 val':>10}{'wall s':>9}"
    print(
        f"GSM8K, {args.examples} examples, matmul peak fp32 {peaks['fp32']:.0f} / bf16 {peaks['bf16']:.0f} GFLOP/s"
    )
    print(header)
    for r in results:
        used = r["peak_gpu_mb"] if device != "cpu" else r["peak_rss_mb"]
        print(f"{r['config']:<22}{r['precision']:>6}{r['tokens_per_second']:>9}{r['mfu']:>8.1%}{used:>9}"
              f"{r['estimated_peak_gb'] or '':>8}{r['val_loss']:>10}{r['val_loss_fp32']:>10}{r['wall_seconds']:>9}")  # fmt: skip
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
