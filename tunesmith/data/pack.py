"""Packing rendered examples into dense rows with no cross-example attention.

Owns: first-fit-decreasing packing of one micro-batch into rows of at most `row_len` tokens, with
position ids restarting at 0 for every example. With `attention_mask=None`, transformers reads those
restarts as sequence boundaries and builds a block-diagonal causal mask (SDPA, CPU and GPU), so a
packed row computes exactly what the examples would compute one by one. Also `share_prefix`: the
examples of a row laid end to end, with the tokens they all begin with (a system prompt, a chat
template's header) kept once; an attention that reads its bounds lets every example attend to that
one copy (`tunesmith.models.attention`). Does not own: rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunesmith.data.render import IGNORE_INDEX, RenderedExample


@dataclass(frozen=True)
class PackedBatch:
    input_ids: torch.Tensor  # (B, T)
    position_ids: torch.Tensor  # (B, T), restarting at 0 for each example
    targets: torch.Tensor  # (B, T), IGNORE_INDEX where no loss
    num_tokens: int  # real (non-padding) tokens
    num_loss_tokens: int  # tokens that carry loss
    row_tokens: list[int]  # real tokens per row: rows sliced apart need no padding past their own
    row_examples: list[list[int]]  # the examples (indices into the packed list) of each row, in order

    def width(self, rows: slice) -> int:
        """Columns that `rows` need: their longest real length (the rest is padding for other rows)."""
        return max(self.row_tokens[rows])

    def end_to_end(self, rows: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`rows`' real tokens laid end to end as one `(1, N)` row: input ids, position ids, targets.

        No padding at all; only for an attention that finds examples from position ids, never across rows.
        """
        lengths = self.row_tokens[rows]
        picked = [
            torch.cat([row[:length] for row, length in zip(tensor[rows], lengths, strict=True)])[None]
            for tensor in (self.input_ids, self.position_ids, self.targets)
        ]
        return picked[0], picked[1], picked[2]


# Shorter shared openings are left in each example: sharing costs a key/value concatenation per example
# and layer, which a few tokens may not repay (a judgement; the threshold is not measured).
MIN_SHARED_PREFIX = 8


@dataclass(frozen=True)
class SharedPrefixRow:
    input_ids: torch.Tensor  # (1, N): the shared prefix once, then each example without it
    position_ids: torch.Tensor  # (1, N): the examples' own positions (each rest continues at `prefix`)
    targets: torch.Tensor  # (1, N)
    bounds: list[int]  # span starts and the end: [0, prefix, ...] when shared, else each example's start
    prefix: int  # tokens every example shares, computed once (0: nothing shared)


def share_prefix(
    input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor
) -> SharedPrefixRow:
    """One end-to-end row (`PackedBatch.end_to_end`) with the examples' common opening kept once.

    The prefix is the longest run of tokens that every example starts with and that carries no loss in
    any of them (a target there would be counted once instead of once per example); each example keeps
    at least one token of its own. Causal attention makes the prefix's hidden states the same in every
    example, so computing them once, with every example attending to that copy, gives the same losses
    and gradients (autograd sums the examples' gradients into the one copy) for fewer tokens.
    """
    ids, positions, labels = input_ids[0].tolist(), position_ids[0].tolist(), targets[0].tolist()
    starts = [index for index, position in enumerate(positions) if position == 0]
    ends = [*starts[1:], len(ids)]
    unshared = SharedPrefixRow(input_ids, position_ids, targets, [*starts, len(ids)], 0)
    if len(starts) < 2:
        return unshared
    longest = min(end - start for start, end in zip(starts, ends, strict=True)) - 1
    prefix = 0
    while prefix < longest and all(
        ids[start + prefix] == ids[starts[0] + prefix] and labels[start + prefix] == IGNORE_INDEX
        for start in starts
    ):
        prefix += 1
    if prefix < MIN_SHARED_PREFIX:
        return unshared
    keep = list(range(starts[0], starts[0] + prefix))
    bounds = [0, prefix]
    for start, end in zip(starts, ends, strict=True):
        keep.extend(range(start + prefix, end))
        bounds.append(len(keep))
    index = torch.tensor(keep)
    return SharedPrefixRow(input_ids[:, index], position_ids[:, index], targets[:, index], bounds, prefix)


def pack_rows(lengths: list[int], row_len: int) -> list[list[int]]:
    """Indices of examples per row: first-fit decreasing, each row at most `row_len` tokens."""
    order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
    rows: list[list[int]] = []
    free: list[int] = []
    for index in order:
        length = lengths[index]
        if length > row_len:
            raise ValueError(f"example of {length} tokens does not fit a row of {row_len}")
        for row, space in enumerate(free):
            if length <= space:
                rows[row].append(index)
                free[row] -= length
                break
        else:
            rows.append([index])
            free.append(row_len - length)
    return rows


def pack_batch(examples: list[RenderedExample], row_len: int, pad_id: int) -> PackedBatch:
    """Pack `examples` into as few rows as fit; rows are right-padded to the longest row only."""
    rows = pack_rows([len(example.input_ids) for example in examples], row_len)
    row_tokens = [sum(len(examples[index].input_ids) for index in row) for row in rows]
    width = max(row_tokens)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for row_index, row in enumerate(rows):
        cursor = 0
        for index in row:
            example = examples[index]
            length = len(example.input_ids)
            input_ids[row_index, cursor : cursor + length] = torch.tensor(example.input_ids)
            targets[row_index, cursor : cursor + length] = torch.tensor(example.targets)
            position_ids[row_index, cursor : cursor + length] = torch.arange(length)
            cursor += length
        # Padding forms its own short "sequence" (positions restart at 0): it attends only to itself.
        position_ids[row_index, cursor:] = torch.arange(width - cursor)
    num_loss_tokens = sum(example.num_loss_tokens for example in examples)
    return PackedBatch(input_ids, position_ids, targets, sum(row_tokens), num_loss_tokens, row_tokens, rows)
