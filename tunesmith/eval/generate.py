"""Batched greedy generation with a KV cache and left padding.

Owns: turning rendered prompts into completions, in length-sorted batches so padding stays small.
Does not own: which model or adapter is active (the caller sets it) or scoring.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@torch.inference_mode()
def generate_batched(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy completions of `prompts` (already chat-rendered), in input order, stopped at end-of-turn."""
    order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
    outputs: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = tokenizer(
            [prompts[index] for index in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        generated = model.generate(  # type: ignore[operator]
            **encoded,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        for index, text in zip(
            chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True
        ):
            outputs[index] = text.strip()
        if on_batch is not None:
            on_batch(len(chunk))
    return outputs
