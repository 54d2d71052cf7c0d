"""Generation jobs and the state of a decoding batch. Torch, but no model.

Owns: what a job asks for (`GenerationJob`) and hears back (`JobEvent`), and the errors that fail one
job alone (`JobError` and its kinds); a row's decoded text, stop strings and what is safe to stream
(`Row`); a batch's KV cache, mask and positions, with dropping rows, trimming the left padding no row
needs any more, and merging a newly prefilled batch in, left-padded (`Batch`). Does not own: running
the model or the queue (see `engine`), or what an error looks like over HTTP (see `service`).
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


class JobError(RuntimeError):
    """A failure of one job alone; its message is safe to show the client (no paths, no internals)."""


class AdapterLoadError(JobError):
    """The job's adapter cannot be loaded; the message says why (the adapter named by key, not path)."""


class RowError(JobError):
    """The job's row failed while decoding (e.g. its distribution could not be sampled)."""


class QueueTimeoutError(JobError):
    """The job waited in the queue longer than the server allows."""


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
    tenant: str = "-"  # whose request (`-`: no tenant, an admin key or no auth); tenants take turns
    request_id: str = "-"  # the HTTP request's id, so the server log can tell which request failed
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
        self.scanned = 0  # characters of the decoded text already searched for stop strings
        self.longest_stop = max((len(stop) for stop in job.stop), default=0)
        self.generator = None if job.seed is None else torch.Generator(device).manual_seed(job.seed)

    def step(self, token: int) -> bool:
        """Take one sampled token; emit what text is now safe to send. False once the job is done."""
        if token in self.eos:
            return self._finish(self._text(), "stop")
        self.ids.append(token)
        text = self._text()
        # only the new text and a stop string's length before it can hold a new match: each token
        # costs the stop strings' length, not the whole text's
        start = max(0, self.scanned - self.longest_stop)
        self.scanned = len(text)
        matches = [at for at in (text.find(stop, start) for stop in self.job.stop) if at >= 0]
        if matches:
            return self._finish(text[: min(matches)], "stop")
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
        self.trim()

    def trim(self) -> None:
        """Drop the left columns that no row attends to (padding for rows that have left).

        Without this a batch kept alive by staggered requests grows by one column per step forever;
        with it the cache is as wide as its longest live row.
        """
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.mask.shape[1]
        if start == 0:
            return
        for layer in self.cache.layers:
            assert isinstance(layer, DynamicLayer)
            assert layer.keys is not None and layer.values is not None
            layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        self.mask = self.mask[:, start:]

    @property
    def columns(self) -> int:
        """Key positions per row in the cache (the width every decode step attends over)."""
        return int(self.mask.shape[1])

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
