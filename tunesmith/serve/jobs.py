"""Generation jobs and the state of a decoding batch. Torch, but no model.

Owns: what a job asks for (`GenerationJob`) and hears back (`JobEvent`); a row's decoded text,
stop strings and what is safe to stream (`Row`); a batch's KV cache, mask and positions, with
dropping rows and merging a newly prefilled batch in, left-padded (`Batch`). Does not own: running
the model or the queue (see `engine`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase
from transformers.cache_utils import DynamicLayer


@dataclass
class JobEvent:
    """What the worker tells a job's sink: a text delta, the end, or an error."""

    kind: Literal["delta", "done", "error"]
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "cancelled", on done
    completion_tokens: int = 0  # on done
    error: Exception | None = None  # on error


@dataclass(eq=False)
class GenerationJob:
    """One completion to generate. `sink` is called from the worker thread; it must not block."""

    prompt_ids: list[int]
    adapter: str | None  # loaded-adapter key (`name@version`), None for the bare base model
    adapter_path: Path | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    sink: Callable[[JobEvent], None]
    label: str = "base"  # the variant, for metrics
    cancelled: bool = False  # set by the caller when its client goes away; the row is dropped
    enqueued_at: float = field(default_factory=time.monotonic)


class Row:
    """A job being decoded: its tokens so far and how much of their text was already sent."""

    def __init__(
        self, job: GenerationJob, tokenizer: PreTrainedTokenizerBase, eos: set[int], device: torch.device
    ) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.eos = eos
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already emitted
        self.generator = None if job.seed is None else torch.Generator(device).manual_seed(job.seed)

    def step(self, token: int) -> bool:
        """Take one sampled token; emit what text is now safe to send. False once the job is done."""
        if token in self.eos:
            return self._finish(self._text(), "stop")
        self.ids.append(token)
        text = self._text()
        for stop in self.job.stop:
            at = text.find(stop)
            if at >= 0:
                return self._finish(text[:at], "stop")
        if len(self.ids) >= self.job.max_tokens:
            return self._finish(text, "length")
        safe = len(text) - held_back(text, self.job.stop)
        self.job.sink(JobEvent("delta", text[self.sent : safe]))
        self.sent = max(self.sent, safe)
        return True

    def _text(self) -> str:
        return str(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _finish(self, text: str, reason: str) -> bool:
        if len(text) > self.sent:
            self.job.sink(JobEvent("delta", text[self.sent :]))
        self.job.sink(JobEvent("done", finish_reason=reason, completion_tokens=len(self.ids)))
        return False


def held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` not yet safe to send: a partial UTF-8 character or stop string."""
    held = len(text) - len(text.rstrip("\ufffd"))  # bytes of a character still arriving
    if held:
        return held
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held


@dataclass
class Batch:
    """Rows decoding together: their KV cache, attention mask, last positions and next input tokens."""

    rows: list[Row]
    cache: DynamicCache
    mask: torch.Tensor  # (B, T): 1 for real keys, 0 for left padding
    position: torch.Tensor  # (B, 1): position of each row's last fed token
    next_ids: torch.Tensor  # (B, 1): the token each row feeds next

    def keep(self, indices: list[int]) -> None:
        """Keep only these rows (freeing the finished rows' compute and cache)."""
        if len(indices) == len(self.rows):
            return
        selected = torch.tensor(indices, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(selected)
        self.mask, self.position, self.next_ids = (
            self.mask[selected],
            self.position[selected],
            self.next_ids[selected],
        )
        self.rows = [self.rows[index] for index in indices]

    def merge(self, other: Batch) -> Batch:
        """Both batches' rows in one, their caches and masks left-padded to the same length."""
        width = max(self.mask.shape[1], other.mask.shape[1])
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            assert isinstance(mine, DynamicLayer) and isinstance(theirs, DynamicLayer)
            assert mine.keys is not None and mine.values is not None
            assert theirs.keys is not None and theirs.values is not None
            mine.keys = torch.cat([_pad_keys(mine.keys, width), _pad_keys(theirs.keys, width)])
            mine.values = torch.cat([_pad_keys(mine.values, width), _pad_keys(theirs.values, width)])
        self.mask = torch.cat([_pad_mask(self.mask, width), _pad_mask(other.mask, width)])
        self.position = torch.cat([self.position, other.position])
        self.next_ids = torch.cat([self.next_ids, other.next_ids])
        self.rows = [*self.rows, *other.rows]
        return self


def _pad_keys(states: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad cached keys or values (B, H, T, D) with zeros to T = width (masked out)."""
    return torch.nn.functional.pad(states, (0, 0, width - states.shape[-2], 0))


def _pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(mask, (width - mask.shape[-1], 0))
