"""Batched generation with a KV cache and left padding: greedy, beam search or sampling.

Owns: turning rendered prompts into completions, in length-sorted batches so padding stays small, and
`Decoding`, how they are decoded, with the one-line description reports print beside each figure.
Greedy and sampled batches keep their KV cache in `GrowingCache` (written in place, see
`tunesmith.models.decode`).
Every decoding runs through transformers' `generate`, beam search included: this generator already
hands each left-padded batch to `generate`, which runs beams over a batch (each prompt's beams kept
apart, the padding masked), length penalty, no-repeat n-grams and the repetition penalty; a beam
search of our own would only have to reproduce it (a test checks the batched beams equal `generate`'s
on one prompt at a time). Does not own: which model or adapter is active (the caller sets it) or
scoring.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.models.decode import GrowingCache


@dataclass(frozen=True)
class Decoding:
    """How answers are decoded; the defaults are greedy decoding."""

    num_beams: int = 1  # > 1: beam search
    length_penalty: float = 1.0  # beam search: scores are log-probability sums / length ** this
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this size twice in an answer
    repetition_penalty: float = 1.0  # > 1: the scores of tokens already seen are divided by it
    do_sample: bool = False  # sample (temperature, top_p) instead of taking the most likely token
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0  # sampling: torch's seed before the first batch

    def describe(self) -> str:
        """One line for reports: `greedy`, `beam search (4 beams, length penalty 1.0)`, `sampling (...)`."""
        if self.num_beams > 1:
            text = f"beam search ({self.num_beams} beams, length penalty {self.length_penalty:g})"
        elif self.do_sample:
            text = f"sampling (temperature {self.temperature:g}, top_p {self.top_p:g}, seed {self.seed})"
        else:
            text = "greedy"
        if self.no_repeat_ngram_size:
            text += f", no repeated {self.no_repeat_ngram_size}-grams"
        if self.repetition_penalty != 1.0:
            text += f", repetition penalty {self.repetition_penalty:g}"
        return text

    def generate_arguments(self) -> dict[str, Any]:
        """The keyword arguments of transformers' `generate` for this decoding."""
        arguments: dict[str, Any] = {
            "num_beams": self.num_beams,
            "no_repeat_ngram_size": self.no_repeat_ngram_size,
            "repetition_penalty": self.repetition_penalty,
            "do_sample": self.do_sample,
            # Set every one, so a model's generation_config.json cannot add its own sampling settings.
            "temperature": self.temperature if self.do_sample else None,
            "top_p": self.top_p if self.do_sample else None,
            "top_k": None,
        }
        if self.num_beams > 1:
            arguments["length_penalty"] = self.length_penalty
        return arguments


GREEDY = Decoding()


@torch.inference_mode()
def generate_batched(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    decoding: Decoding = GREEDY,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Completions of `prompts` (already chat-rendered), in input order, stopped at end-of-turn."""
    order = sorted(range(len(prompts)), key=lambda index: len(prompts[index]))
    outputs: list[str] = [""] * len(prompts)
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    arguments = decoding.generate_arguments()
    if decoding.do_sample:
        torch.manual_seed(decoding.seed)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        encoded = tokenizer(
            [prompts[index] for index in chunk], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        # each step's keys written into room kept for them, not the cache concatenated (greedy and
        # sampling; beam search reorders the cache every step, which a preallocated one would copy)
        cache = GrowingCache() if decoding.num_beams == 1 else None
        generated = model.generate(  # type: ignore[operator]
            **encoded,
            cache=cache,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **arguments,
        )
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        for index, text in zip(
            chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True), strict=True
        ):
            outputs[index] = text.strip()
        if on_batch is not None:
            on_batch(len(chunk))
    return outputs
