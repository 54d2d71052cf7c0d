"""The stacked LoRA forward against peft, one row at a time: prefill and a decode step, mixed batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import DynamicCache

from tests.unit.serve.conftest import make_adapter
from tunesmith.lora.stacked import StackedLoRALinear
from tunesmith.models.loading import load_model
from tunesmith.serve.adapters import AdapterCache

PROMPTS = [[5, 9, 31, 7], [12, 40], [3, 3, 8, 90, 17, 4], [77], [5, 9, 31, 8, 2], [60, 61, 62]]


@pytest.fixture(scope="module")
def narrow_adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rank 8 (the others are 4) on two of the seven linear layers: padding and zero slots matter."""
    out = tmp_path_factory.mktemp("narrow") / "adapter"
    return make_adapter(tiny_model_dir, out, seed=7, targets=["q_proj", "v_proj"], rank=8)


@torch.inference_mode()
def _alone(tiny_model_dir: Path, adapter_dir: Path | None, prompt: list[int], token: int) -> torch.Tensor:
    """(2, V): logits after the prompt and after `token`, the row alone through peft with only its adapter."""
    model = load_model(str(tiny_model_dir)).eval()
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir)).eval()
    return model(input_ids=torch.tensor([[*prompt, token]])).logits[0, -2:]  # type: ignore[no-any-return]


@torch.inference_mode()
def _batched(
    cache: AdapterCache, adapters: list[str | None], prompts: list[list[int]], tokens: list[int]
) -> torch.Tensor:
    """(B, 2, V): the engine's way, left-padded prefill with a KV cache, then one decode step."""
    width = max(len(prompt) for prompt in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # (B, T)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])  # (B, T)
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    kv = DynamicCache()
    with cache.routed(adapters):
        first = cache.model(input_ids=ids, attention_mask=mask, position_ids=position, cache=kv).logits
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        step = cache.model(
            input_ids=torch.tensor(tokens).view(-1, 1), attention_mask=mask, position_ids=position[:, -1:] + 1,
            cache=kv,
        ).logits  # fmt: skip
    return torch.stack([first[:, -1], step[:, -1]], dim=1)


def _expect_alone(
    tiny_model_dir: Path, cache: AdapterCache, paths: dict[str, Path], adapters: list[str | None]
) -> None:
    prompts, tokens = PROMPTS[: len(adapters)], [11 + i for i in range(len(adapters))]
    batched = _batched(cache, adapters, prompts, tokens)
    for row, adapter in enumerate(adapters):
        alone = _alone(tiny_model_dir, None if adapter is None else paths[adapter], prompts[row], tokens[row])
        torch.testing.assert_close(batched[row], alone, atol=1e-4, rtol=1e-4, msg=f"row {row} on {adapter}")


@pytest.mark.parametrize(
    "adapters",
    [
        ["a", None, "b", "c", "a", None],  # mixed: padded blocks in decode, gathered slots in prefill
        ["b", "b", "b"],  # one adapter: the plain low-rank path
        [None, "c"],  # one adapter beside the base
    ],
)
def test_batch_rows_match_each_row_alone_through_peft(
    tiny_model_dir: Path, adapter_dirs: list[Path], narrow_adapter: Path, adapters: list[str | None]
) -> None:
    paths = {"a": adapter_dirs[0], "b": adapter_dirs[1], "c": narrow_adapter}
    cache = AdapterCache(load_model(str(tiny_model_dir)).eval(), str(tiny_model_dir), capacity=3)
    for key, path in paths.items():
        cache.ensure(key, path, pinned=set())
    _expect_alone(tiny_model_dir, cache, paths, adapters)


def test_base_rows_get_the_base_output_bit_for_bit(tiny_model_dir: Path, adapter_dirs: list[Path]) -> None:
    cache = AdapterCache(load_model(str(tiny_model_dir)).eval(), str(tiny_model_dir), capacity=2)
    cache.ensure("a", adapter_dirs[0], pinned=set())
    cache.ensure("b", adapter_dirs[1], pinned=set())
    adapters = ["a", None, "b", None]
    mixed = _batched(cache, adapters, PROMPTS[:4], [1, 2, 3, 4])
    bare = _batched(cache, [None] * 4, PROMPTS[:4], [1, 2, 3, 4])
    assert torch.equal(mixed[[1, 3]], bare[[1, 3]])
    assert (mixed[[0, 2]] - bare[[0, 2]]).abs().max() > 0.1  # the adapters do change their rows


def test_an_unloaded_slot_is_cleared_and_reused(
    tiny_model_dir: Path, adapter_dirs: list[Path], narrow_adapter: Path
) -> None:
    paths = {"a": adapter_dirs[0], "b": adapter_dirs[1], "c": narrow_adapter}
    cache = AdapterCache(load_model(str(tiny_model_dir)).eval(), str(tiny_model_dir), capacity=2)
    cache.ensure("c", paths["c"], pinned=set())  # rank 8 first: the rank-4 ones are padded to it
    cache.ensure("a", paths["a"], pinned=set())
    two = cache.memory_bytes()
    assert cache.unload("a")
    cache.ensure("b", paths["b"], pinned=set())  # a's slot, zeroed, then b's weights
    assert cache.memory_bytes() == two  # reused, not grown
    _expect_alone(tiny_model_dir, cache, paths, ["b", "c", None])
    assert cache.unload("c")
    cache.ensure("a", paths["a"], pinned=set())  # c's slot: its q and v must not leak into a's rows
    _expect_alone(tiny_model_dir, cache, paths, ["a", "b"])
    assert cache.unload("a") and cache.unload("b")
    assert cache.memory_bytes() == 0
    assert not any(isinstance(module, StackedLoRALinear) for module in cache.model.modules())
    cache.ensure("a", paths["a"], pinned=set())  # loadable again after the stacks were dropped
    _expect_alone(tiny_model_dir, cache, paths, ["a", None])


def test_routing_an_adapter_that_is_not_loaded_raises(tiny_model_dir: Path, adapter_dirs: list[Path]) -> None:
    cache = AdapterCache(load_model(str(tiny_model_dir)).eval(), str(tiny_model_dir), capacity=1)
    cache.ensure("a", adapter_dirs[0], pinned=set())
    cache.ensure("b", adapter_dirs[1], pinned=set())  # evicts a
    with pytest.raises(KeyError, match="'a'"):
        _batched(cache, ["a", "b"], PROMPTS[:2], [1, 2])  # never the base in a's name
