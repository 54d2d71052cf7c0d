"""Prompt prefill for the engine: prefix caching and prefill in chunks.

Owns: `PrefixCache`, the keys and values of recent prompts per adapter, found again by any prefix a
multiple of `block` tokens long (requests that share an opening — a system prompt, few-shot
demonstrations — compute it once; an LRU bound in tokens); `Prefill`, a group of new jobs whose
prompts are computed together, `chunk` columns at a time, so the engine can run a decode step for the
streams already running between two chunks of a long prompt (chunked prefill). A group is the jobs
that found the same cached prefix (or none): their cache starts as that prefix, once per row, and
their remaining prompt tokens follow it, left-padded to the longest (masked, with positions counted
from the prefix), so every row computes what it would alone. Does not own: running the model or
sampling (the engine passes `forward`), the decoding batch (see `jobs.Batch`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tunesmith.models.decode import GrowingCache
from tunesmith.serve.jobs import Batch, Row

KeyValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values (1, H, L, D)
Forward = Callable[[list[Row], torch.Tensor, torch.Tensor, torch.Tensor, DynamicCache], torch.Tensor]


@dataclass
class _Entry:
    adapter: str | None
    ids: tuple[int, ...]  # the cached prompt tokens (a multiple of the block)
    states: KeyValues


class PrefixCache:
    """Keys and values of prompt openings per adapter, at most `max_tokens` positions (least recent out)."""

    def __init__(self, max_tokens: int, block: int = 16) -> None:
        self.max_tokens = max_tokens
        self.block = block
        self.tokens = 0
        self.hits = 0  # prompt tokens not computed because their prefix was found
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._index: dict[tuple[str | None, tuple[int, ...]], int] = {}  # (adapter, prefix) -> entry
        self._next_id = 0

    def aligned(self, ids: list[int]) -> int:
        """The longest prefix of `ids` kept or found: whole blocks, one token left to compute logits from."""
        return (len(ids) - 1) // self.block * self.block

    def find(self, adapter: str | None, ids: list[int]) -> tuple[int, int | None]:
        """`(n, entry)`: the longest cached prefix of `ids` shorter than `ids` (0, None: none)."""
        for length in range(self.aligned(ids), 0, -self.block):
            entry = self._index.get((adapter, tuple(ids[:length])))
            if entry is not None:
                self._entries.move_to_end(entry)
                return length, entry
        return 0, None

    def states(self, entry: int, length: int) -> KeyValues:
        """The first `length` positions of an entry's keys and values (views)."""
        return [(k[:, :, :length], v[:, :, :length]) for k, v in self._entries[entry].states]

    def store(self, adapter: str | None, ids: list[int], states: KeyValues) -> None:
        """Keep `states` (tensors of the caller's own), keys and values of the first block-aligned prompt
        tokens of `ids` (at least `aligned(ids)` positions), under every block prefix."""
        length = self.aligned(ids)
        if length == 0 or length > self.max_tokens:
            return
        if (adapter, tuple(ids[:length])) in self._index:
            self._entries.move_to_end(self._index[(adapter, tuple(ids[:length]))])
            return
        entry = self._next_id
        self._next_id += 1
        kept = [(k[:, :, :length].contiguous(), v[:, :, :length].contiguous()) for k, v in states]
        self._entries[entry] = _Entry(adapter, tuple(ids[:length]), kept)
        for end in range(self.block, length + 1, self.block):
            self._index[(adapter, tuple(ids[:end]))] = entry
        self.tokens += length
        while self.tokens > self.max_tokens:
            self._evict(next(iter(self._entries)))

    def _evict(self, entry: int) -> None:
        dropped = self._entries.pop(entry)
        self.tokens -= len(dropped.ids)
        for end in range(self.block, len(dropped.ids) + 1, self.block):
            key = (dropped.adapter, dropped.ids[:end])
            if self._index.get(key) == entry:
                del self._index[key]


@dataclass
class Prefill:
    """Jobs whose prompts are being computed, `done` of their `ids` columns so far."""

    rows: list[Row]
    ids: torch.Tensor  # (B, W): each prompt after the shared prefix, left-padded
    mask: torch.Tensor  # (B, P + W): 1 for the prefix and each row's tokens, 0 on its padding
    position: torch.Tensor  # (B, W): positions of the ids, counted from the prefix
    cache: GrowingCache
    done: int = 0
    prefix: int = 0  # P: positions already in the cache (found in the prefix cache)
    reused: list[int] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return int(self.ids.shape[1]) - self.done


def plan_prefills(rows: list[Row], prefixes: PrefixCache | None, pad_id: int) -> list[Prefill]:
    """Group `rows` by the cached prefix each found, into prefills that start from it."""
    groups: dict[tuple[int, int | None], list[Row]] = {}
    for row in rows:
        found = (0, None) if prefixes is None else prefixes.find(row.job.adapter, row.job.prompt_ids)
        groups.setdefault(found, []).append(row)
    plans = []
    for (length, entry), members in groups.items():
        cache = GrowingCache()
        if entry is not None:
            assert prefixes is not None
            prefixes.hits += length * len(members)
            for layer, (keys, values) in enumerate(prefixes.states(entry, length)):
                size = (len(members), -1, -1, -1)
                cache.update(keys.expand(*size), values.expand(*size), layer)
        plans.append(_padded(members, length, cache, pad_id))
    return plans


def _padded(rows: list[Row], prefix: int, cache: GrowingCache, pad_id: int) -> Prefill:
    width = max(len(row.job.prompt_ids) - prefix for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, W)
    mask = torch.zeros((len(rows), prefix + width), dtype=torch.long)  # (B, P + W)
    mask[:, :prefix] = 1
    for index, row in enumerate(rows):
        tail = row.job.prompt_ids[prefix:]
        ids[index, width - len(tail) :] = torch.tensor(tail)
        mask[index, prefix + width - len(tail) :] = 1
    position = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix:]  # (B, W)
    return Prefill(rows, ids, mask, position, cache, prefix=prefix)


def run_chunk(
    prefill: Prefill, chunk: int, forward: Forward, prefixes: PrefixCache | None, device: torch.device
) -> tuple[Batch, torch.Tensor] | None:
    """Compute the next `chunk` prompt columns; when the prompts are done, their batch and last logits."""
    end = prefill.done + min(chunk, prefill.remaining)
    ids = prefill.ids[:, prefill.done : end].to(device)
    mask = prefill.mask[:, : prefill.prefix + end].to(device)
    position = prefill.position[:, prefill.done : end].to(device)
    logits = forward(prefill.rows, ids, mask, position, prefill.cache)
    prefill.done = end
    if prefill.remaining:
        return None
    if prefixes is not None:
        _store_prompts(prefill, prefixes)
    batch = Batch(prefill.rows, prefill.cache, mask, position[:, -1:], ids[:, -1:])
    return batch, logits


def _store_prompts(prefill: Prefill, prefixes: PrefixCache) -> None:
    """Keep each row's prompt keys and values (its columns of the cache, padding left out)."""
    layers = []
    for layer in prefill.cache.layers:
        assert isinstance(layer, DynamicLayer)
        layers.append((layer.keys, layer.values))
    for index, row in enumerate(prefill.rows):
        length = prefixes.aligned(row.job.prompt_ids)
        if length == 0:
            continue
        states: KeyValues = []
        for keys, values in layers:
            assert keys is not None and values is not None
            columns = prefill.mask[index].nonzero().flatten()[:length].to(keys.device)
            states.append((keys[index : index + 1, :, columns], values[index : index + 1, :, columns]))
        prefixes.store(row.job.adapter, row.job.prompt_ids, states)
