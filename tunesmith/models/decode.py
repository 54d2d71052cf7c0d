"""The decode-time pieces of a causal LM that the serving engine runs: a KV cache that grows in place,
and linear layers that read bf16 weights at memory bandwidth for one-token inputs.

Owns: `GrowingCache`, a transformers `DynamicCache` whose layers write each step's keys and values
into preallocated room instead of concatenating the whole cache (`torch.cat` re-copied every key of
every row at every step: 6% of a one-row step and up to 29% of a 16-row step, see
benchmarks/RESULTS.md, "Decode step profile"); `use_decode_linears`, which makes a model's linear
layers run a one-token input on a CPU in bf16 as a matrix-vector product (oneDNN's bf16 `linear` of
one row is slower than fp32's; `torch.mv` reads the bf16 weights at bandwidth, half fp32's bytes).
Does not own: batching, prefill scheduling or prefix caching (see `tunesmith.serve.engine`), or the
LoRA delta (see `tunesmith.lora.stacked`, whose bf16 rows round once through
`tunesmith.lora.rounding.linear_with_delta`, which takes the same one-row path).

The layers stay transformers' `DynamicLayer` for everything else the engine does to a batch (keep
rows, trim left padding, merge batches): any of those replaces a layer's `keys`/`values` with a tensor
outside its room, and the next `update` moves them into new room with headroom again.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import Cache, DynamicLayer

HEADROOM = 128  # positions of room added past what a layer holds when it moves into new room


class GrowingLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views into a buffer with room to write the next steps."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.key_room: torch.Tensor | None = None  # (B, H, capacity, D)
        self.value_room: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions after the cached ones, in place when there is room; return all of them."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        span = self._span()
        if span is None or span[1] + new > self._capacity():
            self._move_to_room(key_states, new)
            span = (0, self.get_seq_length())
        start, end = span
        assert self.key_room is not None and self.value_room is not None
        self.key_room[:, :, end : end + new] = key_states
        self.value_room[:, :, end : end + new] = value_states
        self.keys = self.key_room[:, :, start : end + new]
        self.values = self.value_room[:, :, start : end + new]
        return self.keys, self.values

    def _capacity(self) -> int:
        return 0 if self.key_room is None else int(self.key_room.shape[2])

    def _span(self) -> tuple[int, int] | None:
        """`(start, end)` columns of the room that `keys`/`values` view; None when they live elsewhere."""
        if self.key_room is None or self.value_room is None or self.keys is None or self.values is None:
            return None
        if not (_is_window(self.keys, self.key_room) and _is_window(self.values, self.value_room)):
            return None
        start = (self.keys.storage_offset() - self.key_room.storage_offset()) // self.key_room.stride(2)
        value_start = (
            self.values.storage_offset() - self.value_room.storage_offset()
        ) // self.value_room.stride(2)
        if start != value_start:
            return None
        return start, start + int(self.keys.shape[2])

    def _move_to_room(self, like: torch.Tensor, new: int) -> None:
        """Copy the cached keys and values to the start of new buffers with room for `new` + HEADROOM more."""
        length = self.get_seq_length()
        batch, heads, _, dim = like.shape
        shape = (batch, heads, length + new + HEADROOM, dim)
        self.key_room = like.new_empty(shape)
        self.value_room = like.new_empty(shape)
        if length:
            assert self.keys is not None and self.values is not None
            self.key_room[:, :, :length] = self.keys
            self.value_room[:, :, :length] = self.values
        self.keys = self.key_room[:, :, :length]
        self.values = self.value_room[:, :, :length]


def _is_window(view: torch.Tensor, room: torch.Tensor) -> bool:
    """True when `view` is `room[:, :, a:b]` for some a ≤ b: same storage, strides and other sizes."""
    return (
        view.untyped_storage().data_ptr() == room.untyped_storage().data_ptr()
        and view.stride() == room.stride()
        and view.shape[0] == room.shape[0]
        and view.shape[1] == room.shape[1]
        and view.shape[3] == room.shape[3]
    )


class GrowingCache(DynamicCache):
    """A `DynamicCache` of `GrowingLayer`s (created lazily, one per attention layer)."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=GrowingLayer)


class DecodeLinear(torch.nn.Linear):
    """`nn.Linear` whose one-token CPU bf16 input runs as `torch.addmv` (see the module docstring)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not is_one_row(input):
            return super().forward(input)
        row = input.reshape(-1)
        output = torch.mv(self.weight, row) if self.bias is None else torch.addmv(self.bias, self.weight, row)
        return output.view(*input.shape[:-1], -1)


def is_one_row(inputs: torch.Tensor) -> bool:
    """True for one token's features in bf16 on a CPU, where `mv` beats `linear`."""
    return (
        inputs.dtype == torch.bfloat16 and inputs.device.type == "cpu" and inputs.numel() == inputs.shape[-1]
    )


def use_decode_linears(model: PreTrainedModel) -> int:
    """Make every plain `nn.Linear` of `model` a `DecodeLinear` (same weights, same module); returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = DecodeLinear
            count += 1
    return count
