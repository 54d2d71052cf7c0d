from __future__ import annotations

from pathlib import Path

import torch
from transformers import DynamicCache

from tunesmith.models.decode import DecodeLinear, GrowingCache, use_decode_linears
from tunesmith.models.loading import load_model


def _states(seed: int, rows: int = 3, length: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 4, generator=generator), torch.randn(
        rows, 2, length, 4, generator=generator
    )


def test_growing_cache_equals_dynamic_through_select_trim_and_merge() -> None:
    growing, dynamic = GrowingCache(), DynamicCache()
    for cache in (growing, dynamic):
        cache.update(*_states(0, length=5), 0)
    room = growing.layers[0].key_room  # type: ignore[union-attr]
    for step in range(1, 4):
        for cache in (growing, dynamic):
            cache.update(*_states(step), 0)
    assert growing.layers[0].key_room is room  # written in place: no new room for these steps
    for cache in (growing, dynamic):  # what Batch.keep and Batch.trim do
        cache.batch_select_indices(torch.tensor([0, 2]))
        layer = cache.layers[0]
        layer.keys, layer.values = layer.keys[:, :, 2:], layer.values[:, :, 2:]  # type: ignore[index]
    for step in range(4, 200):  # past the headroom: moves to new room
        for cache in (growing, dynamic):
            keys, values = cache.update(*_states(step, rows=2), 0)
        assert torch.equal(keys, dynamic.layers[0].keys)  # type: ignore[arg-type]
    assert torch.equal(growing.layers[0].keys, dynamic.layers[0].keys)  # type: ignore[arg-type]
    assert torch.equal(growing.layers[0].values, dynamic.layers[0].values)  # type: ignore[arg-type]


def test_decode_linears_give_the_linear_output_for_one_row(tiny_model_dir: Path) -> None:
    model = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    plain = torch.nn.Linear(64, 32).to(torch.bfloat16)
    expected = {
        name: module.weight for name, module in model.named_modules() if type(module) is torch.nn.Linear
    }
    assert use_decode_linears(model) == len(expected) > 0
    assert all(isinstance(module, DecodeLinear) for name, module in model.named_modules() if name in expected)
    fast = torch.nn.Linear(64, 32).to(torch.bfloat16)
    fast.load_state_dict(plain.state_dict())
    fast.__class__ = DecodeLinear
    row = torch.randn(1, 1, 64, dtype=torch.bfloat16)
    torch.testing.assert_close(fast(row), plain(row), rtol=1e-2, atol=1e-2)  # fp32 sums, rounded once
    rows = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    assert torch.equal(fast(rows), plain(rows))  # more than one token: nn.Linear's own forward
