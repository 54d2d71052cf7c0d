"""Packing rendered examples into dense rows with no cross-example attention.

Owns: first-fit-decreasing packing of one micro-batch into rows of at most `row_len` tokens, with
position ids restarting at 0 for every example. With `attention_mask=None`, transformers reads those
restarts as sequence boundaries and builds a block-diagonal causal mask (SDPA, CPU and GPU), so a
packed row computes exactly what the examples would compute one by one. Does not own: rendering.
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
    return PackedBatch(input_ids, position_ids, targets, sum(row_tokens), num_loss_tokens, row_tokens)
