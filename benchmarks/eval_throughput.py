"""Evaluation throughput (examples/s): label scoring and generation, each against the plain alternative.

One command:  .venv/bin/python benchmarks/eval_throughput.py [--examples 48] [--json-out FILE]

Model: the embedded SmolLM2-135M-Instruct, in the precision `tunesmith eval` picks for this machine.
- classification: the first `--examples` CLINC150 test utterances of 10 intents, prompted zero-shot with
  the label list (`baselines.classification_instruction`); tunesmith's `score_labels` (the shared opening
  prefilled once, each prompt and the label trie on its cache, batches of 16) against the plain way, one
  forward over prompt + label for every (example, label) pair. With many labels: label_scoring.py. Both must pick the same labels (`same_predictions`).
- generation: the first `--examples` GSM8K test questions, greedy, 64 new tokens; `generate_batched`
  (length-sorted, left-padded batches of 16 with a KV cache) against one prompt at a time.
The machine is shared: the load average is printed with every figure.

Results, dated, with their commands and machines: benchmarks/RESULTS.md ("Evaluation throughput").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
INTENTS = ["balance", "book_flight", "weather", "play_music", "translate", "recipe", "alarm", "tell_joke",
           "timer", "definition"]  # fmt: skip


def _load() -> tuple[Any, Any]:
    from tunesmith.models.loading import (
        default_device,
        load_model,
        load_tokenizer,
        resolve_model,
        supports_fast_bf16,
    )

    path = resolve_model("smollm2-135m-instruct")
    dtype = torch.bfloat16 if supports_fast_bf16(default_device()) else torch.float32
    return load_model(path, dtype=dtype).eval(), load_tokenizer(path)


def _timed(function: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def classification(model: Any, tokenizer: Any, count: int) -> dict[str, Any]:
    from tunesmith.data.render import render_text
    from tunesmith.eval.baselines import classification_instruction
    from tunesmith.eval.classify import label_continuations, score_labels

    rows = json.loads((DATASETS / "clinc150" / "data_full.json").read_text(encoding="utf-8"))["test"]
    texts = [text for text, intent in rows if intent in INTENTS][:count]
    system = classification_instruction(sorted(INTENTS))
    prompts = [
        render_text(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": t}], generation_prompt=True)
        for t in texts
    ]  # fmt: skip
    labels = sorted(INTENTS)
    scores, fast = _timed(lambda: score_labels(model, tokenizer, prompts, labels, batch_size=16))
    continuations = label_continuations(tokenizer, labels)

    @torch.inference_mode()
    def plain() -> torch.Tensor:
        out = torch.empty(len(prompts), len(labels))
        for row, prompt in enumerate(prompts):
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for column, label_ids in enumerate(continuations):
                logprobs = model(torch.tensor([ids + label_ids])).logits[0].float().log_softmax(-1)
                out[row, column] = sum(logprobs[len(ids) - 1 + i, t] for i, t in enumerate(label_ids))
        return out

    reference, slow = _timed(plain)
    agree = float((scores.argmax(1) == reference.argmax(1)).float().mean())
    return {"examples": len(prompts), "labels": len(labels), "tunesmith_examples_per_s": round(len(prompts) / fast, 2),
            "per_pair_forward_examples_per_s": round(len(prompts) / slow, 2), "speedup": round(slow / fast, 2),
            "same_predictions": agree, "load": os.getloadavg()[0]}  # fmt: skip


def generation(model: Any, tokenizer: Any, count: int) -> dict[str, Any]:
    from tunesmith.data.render import render_text
    from tunesmith.eval.generate import generate_batched

    lines = (DATASETS / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    prompts = [
        render_text(
            tokenizer, [{"role": "user", "content": json.loads(line)["question"]}], generation_prompt=True
        )
        for line in lines
    ]
    _, batched = _timed(lambda: generate_batched(model, tokenizer, prompts, max_new_tokens=64, batch_size=16))
    _, single = _timed(lambda: generate_batched(model, tokenizer, prompts, max_new_tokens=64, batch_size=1))
    return {"examples": len(prompts), "max_new_tokens": 64, "batched_examples_per_s": round(len(prompts) / batched, 2),
            "one_at_a_time_examples_per_s": round(len(prompts) / single, 2), "speedup": round(single / batched, 2),
            "load": os.getloadavg()[0]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=48, help="Examples per measurement.")
    parser.add_argument("--json-out", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    for name in ("clinc150/data_full.json", "gsm8k/test.jsonl"):
        if not (DATASETS / name).is_file():
            sys.exit(f"{DATASETS / name} not found (the project's shared datasets)")
    model, tokenizer = _load()
    results = {
        "device": str(next(model.parameters()).device),
        "dtype": str(next(model.parameters()).dtype),
        "threads": torch.get_num_threads(),
        "classification": classification(model, tokenizer, args.examples),
        "generation": generation(model, tokenizer, args.examples),
    }
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
