"""Label scoring with many labels: the trie on a prefilled cache against the dense path and plain transformers.

One command:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/label_scoring.py [--examples 500]
                  [--reference-examples 32] [--plain-examples 2] [--intents 77] [--adapter DIR]
                  [--kinds zero-shot,5-shot,fine-tune] [--json-out FILE]

The case of issue 24: `tunesmith eval` on a 77-intent support-routing set. Here it is CLINC150's first 77
intents (sorted; `../shared/datasets/clinc150/data_full.json`), 26 training utterances each (2,002, the
few-shot pool) and a seeded sample of their test utterances, scored by the embedded SmolLM2-135M-Instruct
in the precision `tunesmith eval` picks for this machine, with every prompt `tunesmith eval` renders:
- zero-shot: the base model told the 77 labels (`baselines.classification_instruction`);
- 5-shot: the same instruction and 5 demonstrations (`eval.shots`' default);
- fine-tune: the prompt as the fine-tune was trained on (instruction, blank line, text), on a LoRA adapter
  (rank 8 on every linear layer, as `tunesmith train` defaults; untrained, so its figures are its cost).
Paths, each on the same prompts:
- `tunesmith`: `eval.classify.score_labels` (shared opening prefilled once, each prompt's own tokens and
  the label trie in one forward per batch of 16 on its cache): every label's score;
- `best`: `eval.label_search.score_best_labels`, what `tunesmith eval` runs (the same prefix and trie,
  branch and bound: each row's best label and score only, exactly; batches of 16); its forward tokens
  are counted as they run (they depend on the model's confidence), its best labels and scores compared
  with `tunesmith`'s on every prompt;
- `dense`: the path before it, copied here word for word (each row is the prompt followed by all 77
  labels under a 4D mask, one forward per batch of 16);
- `plain`: what a user writes with transformers: one forward over prompt + label per (prompt, label).
`dense` and `plain` run on the first `--reference-examples` / `--plain-examples` prompts only (the
whole set would take hours); their seconds for the whole set are extrapolated linearly (prompts are
sampled, so the subset's lengths are typical; the figures say which are extrapolated). Their scores
on the subset are compared with tunesmith's (largest absolute difference; the same predicted labels).
`--adapter DIR` scores the fine-tune kind with a trained adapter instead (with `--intents` as many as it
was trained on: pruning depends on a confident model). `--reference-examples 0` / `--plain-examples 0`
skip those paths.
`tunesmith_without_shared_prefix` is tunesmith's path with each prompt computed whole in its row (the
trie alone), on the reference subset: what the shared prefix gives. The ceiling is the forward tokens
each path computes (padding included) for the whole set: time is roughly proportional to it. The
machine is shared: run with OMP_NUM_THREADS=1. Each time is given as wall seconds and as this
process's CPU seconds (one thread, so CPU seconds are the work done whatever else runs; the speedups
are taken from them); the load average is printed with every figure.

Results, dated, with their commands and machines: benchmarks/RESULTS.md ("Label scoring").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json"
TRAIN_PER_INTENT, SHOTS, BATCH = 26, 5, 16


def _load(adapter: Path | None) -> tuple[Any, Any, Any]:
    from peft import LoraConfig, PeftModel, get_peft_model

    from tunesmith.lora import use_lora_forwards
    from tunesmith.models.loading import (
        default_device,
        load_model,
        load_tokenizer,
        resolve_model,
        supports_fast_bf16,
    )

    path = resolve_model("smollm2-135m-instruct")
    dtype = torch.bfloat16 if supports_fast_bf16(default_device()) else torch.float32
    base = load_model(path, dtype=dtype).eval()
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    if adapter is None:
        tuned = get_peft_model(
            load_model(path, dtype=dtype), LoraConfig(r=8, lora_alpha=16, target_modules=targets)
        )
    else:
        tuned = PeftModel.from_pretrained(load_model(path, dtype=dtype), str(adapter))
    use_lora_forwards(tuned, fused=False, fast_dropout=False)  # as `tunesmith eval` loads an adapter
    return base, tuned.eval(), load_tokenizer(path)


def _prompts(tokenizer: Any, count: int, intents: int) -> tuple[dict[str, list[str]], list[str]]:
    from tunesmith.data.ingest import DEFAULT_INSTRUCTION
    from tunesmith.data.records import Example
    from tunesmith.data.render import render_text
    from tunesmith.eval.evaluate import Candidate, candidate_prompts

    data = json.loads(CLINC.read_text(encoding="utf-8"))
    labels = sorted({intent for _, intent in data["train"]})[:intents]
    taken: dict[str, int] = {}
    train = []
    for index, (text, intent) in enumerate(data["train"]):
        if intent in labels and taken.get(intent, 0) < TRAIN_PER_INTENT:
            taken[intent] = taken.get(intent, 0) + 1
            messages = [{"role": "user", "content": text}, {"role": "assistant", "content": intent}]
            train.append(Example(messages, f"train:{index}", intent))  # type: ignore[arg-type]
    pool = [(text, intent) for text, intent in data["test"] if intent in labels]
    test = [
        Example(
            [{"role": "user", "content": text}, {"role": "assistant", "content": intent}], f"test:{i}", intent
        )  # type: ignore[list-item]
        for i, (text, intent) in enumerate(random.Random(0).sample(pool, count))
    ]
    prompts = {
        "zero-shot": candidate_prompts(tokenizer, Candidate("zero", shots=0), train, labels, test),
        f"{SHOTS}-shot": candidate_prompts(tokenizer, Candidate("few", shots=SHOTS), train, labels, test),
        "fine-tune": [
            render_text(
                tokenizer,
                [{"role": "user", "content": f"{DEFAULT_INSTRUCTION}\n\n{e.messages[0]['content']}"}],
                generation_prompt=True,
            )
            for e in test
        ],
    }
    return prompts, labels


@dataclass(frozen=True)
class _Time:
    wall: float  # seconds on the clock: depends on what else the shared machine runs
    cpu: float  # seconds this process ran (one thread): the work done, nearly independent of the load


def _timed(function: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, _Time]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, _Time(time.perf_counter() - wall, time.process_time() - cpu)


def _forward_tokens(prompt_lengths: list[int], continuations: list[list[int]]) -> dict[str, int]:
    """Tokens each path runs through the model for these prompts (padding included)."""
    from tunesmith.eval.classify import label_trie

    trie = label_trie(continuations)
    inner = len({parent for parent in trie.parents if parent >= 0})  # the trie nodes run through the model
    labels_length = sum(len(ids) for ids in continuations)
    ordered = sorted(prompt_lengths)
    batches = [ordered[start : start + BATCH] for start in range(0, len(ordered), BATCH)]
    return {
        "dense": sum(len(batch) * (max(batch) + labels_length) for batch in batches),
        "plain": sum(length * len(continuations) + labels_length for length in prompt_lengths),
        "label_tokens": labels_length,
        "trie_nodes": len(trie.tokens),
        "trie_inner_nodes": inner,
    }


def _tunesmith_tokens(prompt_ids: list[list[int]], nodes: int) -> int:
    from tunesmith.eval.classify import shared_prefix_length

    shared = shared_prefix_length(prompt_ids)
    remainders = sorted(len(ids) - shared for ids in prompt_ids)
    batches = [remainders[start : start + BATCH] for start in range(0, len(remainders), BATCH)]
    return shared + sum(len(batch) * (max(batch) + nodes) for batch in batches)


def _counted(model: Any, function: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, _Time, int, int]:
    """`function`'s result and time, with the tokens and forwards the decoder ran meanwhile."""
    counts = [0, 0]

    def count(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        counts[0] += kwargs["input_ids"].numel()
        counts[1] += 1

    hook = model.get_decoder().register_forward_pre_hook(count, with_kwargs=True)
    try:
        result, measured = _timed(function)
    finally:
        hook.remove()
    return result, measured, counts[0], counts[1]


def measure(
    model: Any, tokenizer: Any, prompts: list[str], labels: list[str], reference: int, plain: int
) -> dict[str, Any]:
    from tunesmith.eval.classify import label_continuations, score_labels
    from tunesmith.eval.label_search import score_best_labels

    continuations = label_continuations(tokenizer, labels)
    ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    tokens = _forward_tokens([len(i) for i in ids], continuations)
    tokens["tunesmith"] = _tunesmith_tokens(ids, tokens["trie_inner_nodes"])
    scores, fast, counted, _ = _counted(
        model, lambda: score_labels(model, tokenizer, prompts, labels, batch_size=BATCH)
    )
    assert counted == tokens["tunesmith"], (counted, tokens["tunesmith"])  # the count is the formula's
    best_scores, best, tokens["best"], best_forwards = _counted(
        model, lambda: score_best_labels(model, tokenizer, prompts, labels, batch_size=BATCH)
    )
    load_fast = os.getloadavg()[0]
    if not reference or not plain:  # the two paths of evaluation only
        return _best_only(scores, fast, best_scores, best, tokens, best_forwards, ids, load_fast)
    dense_scores, dense = _timed(
        lambda: dense_score_labels(model, tokenizer, prompts[:reference], labels, batch_size=BATCH)
    )
    load_dense = os.getloadavg()[0]
    _, no_prefix = _timed(lambda: _without_shared_prefix(model, tokenizer, prompts[:reference], labels))
    plain_scores, slow = _timed(lambda: plain_score_labels(model, ids[:plain], continuations))
    count = len(prompts)

    def whole(measured: _Time, on: int) -> dict[str, float]:  # extrapolated from `on` prompts to all
        return {"wall_s": round(measured.wall * count / on, 1), "cpu_s": round(measured.cpu * count / on, 1)}

    seconds = {
        "tunesmith": whole(fast, count),
        "best": whole(best, count),
        "dense": whole(dense, reference),
        "tunesmith_without_shared_prefix": whole(no_prefix, reference),
        "plain": whole(slow, plain),
    }
    return _best_only(scores, fast, best_scores, best, tokens, best_forwards, ids, load_fast) | {
        "prompts": count,
        "mean_prompt_tokens": round(sum(len(i) for i in ids) / count, 1),
        "seconds": seconds,
        "measured_on": {"dense": reference, "tunesmith_without_shared_prefix": reference, "plain": plain},
        "cpu_speedup_vs_dense": round(seconds["dense"]["cpu_s"] / seconds["tunesmith"]["cpu_s"], 2),
        "cpu_speedup_vs_plain": round(seconds["plain"]["cpu_s"] / seconds["tunesmith"]["cpu_s"], 1),
        "forward_tokens": tokens,
        "token_ratio_dense_over_tunesmith": round(tokens["dense"] / tokens["tunesmith"], 2),
        "max_abs_difference_vs_dense": float((scores[:reference] - dense_scores).abs().max()),
        "max_abs_difference_vs_plain": float((scores[:plain] - plain_scores).abs().max()),
        "same_predictions_vs_dense": float((scores[:reference].argmax(1) == dense_scores.argmax(1)).float().mean()),
        "load": [round(load_fast, 2), round(load_dense, 2), round(os.getloadavg()[0], 2)],
    }  # fmt: skip


def _best_only(
    scores: torch.Tensor,
    fast: _Time,
    best_scores: torch.Tensor,
    best: _Time,
    tokens: dict[str, int],
    best_forwards: int,
    ids: list[list[int]],
    load: float,
) -> dict[str, Any]:
    """The exhaustive scores (`tunesmith`) against the branch and bound (`best`), on every prompt."""
    top, best_top = scores.max(dim=1), best_scores.max(dim=1)
    return {
        "prompts": len(ids),
        "mean_prompt_tokens": round(sum(len(i) for i in ids) / len(ids), 1),
        "seconds": {
            "tunesmith": {"wall_s": round(fast.wall, 1), "cpu_s": round(fast.cpu, 1)},
            "best": {"wall_s": round(best.wall, 1), "cpu_s": round(best.cpu, 1)},
        },
        "cpu_speedup_best_vs_tunesmith": round(fast.cpu / best.cpu, 2),
        "forward_tokens": tokens,
        "token_ratio_tunesmith_over_best": round(tokens["tunesmith"] / tokens["best"], 2),
        "best_forwards": best_forwards,
        "labels_scored_by_best_per_prompt": round(float(best_scores.isfinite().sum(1).float().mean()), 2),
        "same_best_label": float((top.indices == best_top.indices).float().mean()),
        "max_abs_best_score_difference": float((top.values - best_top.values).abs().max()),
        "load": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def _without_shared_prefix(model: Any, tokenizer: Any, prompts: list[str], labels: list[str]) -> torch.Tensor:
    """tunesmith's path with every prompt computed whole in its row (the trie alone): what the prefix gives."""
    from tunesmith.eval import classify

    shared_prefix_length = classify.shared_prefix_length
    classify.shared_prefix_length = lambda prompt_ids: 0  # type: ignore[assignment]
    try:
        return classify.score_labels(model, tokenizer, prompts, labels, batch_size=BATCH)
    finally:
        classify.shared_prefix_length = shared_prefix_length


@torch.inference_mode()
def plain_score_labels(
    model: Any, prompt_ids: list[list[int]], continuations: list[list[int]]
) -> torch.Tensor:
    """One forward over prompt + label for every (prompt, label) pair: the loop a transformers user writes."""
    device = next(model.parameters()).device
    out = torch.empty(len(prompt_ids), len(continuations))
    for row, ids in enumerate(prompt_ids):
        for column, label_ids in enumerate(continuations):
            logits = model(torch.tensor([ids + label_ids], device=device)).logits[0].float()
            logprobs = logits.log_softmax(-1)
            out[row, column] = sum(float(logprobs[len(ids) - 1 + i, t]) for i, t in enumerate(label_ids))
    return out


# The dense path as it was before the trie (tunesmith/eval/classify.py at 4131252), word for word but
# for the names: every label after every prompt in one row under a 4D mask.
@torch.inference_mode()
def dense_score_labels(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    labels: Sequence[str],
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(N, L) summed log-probabilities of each label after each rendered prompt."""
    from tunesmith.eval.classify import label_continuations

    continuations = label_continuations(tokenizer, labels)
    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    prompt_ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda index: len(prompt_ids[index]))
    scores = torch.empty(len(prompts), len(labels))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = _label_batch([prompt_ids[index] for index in chunk], continuations, tokenizer.pad_token_id)
        hidden = decoder(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            position_ids=batch.position_ids.to(device),
            use_cache=False,
        ).last_hidden_state  # (B, T, H)
        rows, queries = batch.query_rows.to(device), batch.query_positions.to(device)
        logits = head(hidden[rows, queries]).float()  # (Q, V): only where a label token is predicted
        token_logprobs = logits.log_softmax(-1).gather(1, batch.targets.to(device)[:, None])[:, 0]
        per_label = torch.zeros(len(chunk) * len(labels), device=device)
        per_label.index_add_(0, batch.owners.to(device), token_logprobs)
        scores[chunk] = per_label.view(len(chunk), len(labels)).cpu()
        if on_batch is not None:
            on_batch(len(chunk))
    return scores


@dataclass(frozen=True)
class _LabelBatch:
    """Rows of [prompt | label 1 | label 2 | ...] with the mask and gather indices to score them."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, 1, T, T) bool, True = may attend
    position_ids: torch.Tensor  # (B, T)
    query_rows: torch.Tensor  # (Q,) row of each scored prediction
    query_positions: torch.Tensor  # (Q,) position whose output predicts the target
    targets: torch.Tensor  # (Q,) the label token predicted there
    owners: torch.Tensor  # (Q,) row * num_labels + label index


def _label_batch(prompts: list[list[int]], continuations: list[list[int]], pad_id: int) -> _LabelBatch:
    labels_length = sum(len(ids) for ids in continuations)
    width = max(len(ids) for ids in prompts) + labels_length
    size = len(prompts)
    input_ids = torch.full((size, width), pad_id, dtype=torch.long)
    mask = torch.zeros((size, 1, width, width), dtype=torch.bool)
    positions = torch.zeros((size, width), dtype=torch.long)
    rows, queries, targets, owners = [], [], [], []
    for row, prompt in enumerate(prompts):
        length = len(prompt)
        input_ids[row, :length] = torch.tensor(prompt)
        mask[row, 0, :length, :length] = torch.ones(length, length, dtype=torch.bool).tril()
        positions[row, :length] = torch.arange(length)
        cursor = length
        for label_index, ids in enumerate(continuations):
            size_label = len(ids)
            span = slice(cursor, cursor + size_label)
            input_ids[row, span] = torch.tensor(ids)
            mask[row, 0, span, :length] = True
            mask[row, 0, span, span] = torch.ones(size_label, size_label, dtype=torch.bool).tril()
            positions[row, span] = torch.arange(length, length + size_label)
            # The prompt's last position predicts the first label token; each label token the next.
            for offset, token in enumerate(ids):
                rows.append(row)
                queries.append(length - 1 if offset == 0 else cursor + offset - 1)
                targets.append(token)
                owners.append(row * len(continuations) + label_index)
            cursor += size_label
        # Padding attends to itself only, so no attention row is empty (an empty row would give NaN).
        tail = torch.arange(cursor, width)
        mask[row, 0, tail, tail] = True
    return _LabelBatch(
        input_ids,
        mask,
        positions,
        torch.tensor(rows),
        torch.tensor(queries),
        torch.tensor(targets),
        torch.tensor(owners),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=500, help="Test utterances scored by tunesmith.")
    parser.add_argument(
        "--reference-examples", type=int, default=32, help="Of them, scored by the dense path."
    )
    parser.add_argument(
        "--plain-examples", type=int, default=2, help="Of them, scored one forward per label."
    )
    parser.add_argument(
        "--kinds", default="zero-shot,5-shot,fine-tune", help="Prompt kinds, comma-separated."
    )
    parser.add_argument("--intents", type=int, default=77, help="CLINC150's first intents (sorted) scored.")
    parser.add_argument(
        "--adapter", type=Path, help="A trained LoRA adapter for the fine-tune kind (default: untrained)."
    )
    parser.add_argument("--json-out", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    if not CLINC.is_file():
        sys.exit(f"{CLINC} not found (the project's shared datasets)")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    base, tuned, tokenizer = _load(args.adapter)
    prompts, labels = _prompts(tokenizer, args.examples, args.intents)
    results: dict[str, Any] = {
        "device": str(next(base.parameters()).device),
        "dtype": str(next(base.parameters()).dtype),
        "threads": torch.get_num_threads(),
        "labels": len(labels),
        "adapter": str(args.adapter) if args.adapter else "untrained",
    }
    for kind in args.kinds.split(","):
        model = tuned if kind == "fine-tune" else base
        results[kind] = measure(
            model, tokenizer, prompts[kind], labels, args.reference_examples, args.plain_examples
        )
        print(kind, json.dumps(results[kind]), flush=True)
    print(json.dumps(results, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
