from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.unit.serve.conftest import make_adapter
from tunesmith.lora.stacked import StackedLoRALinear
from tunesmith.models.loading import load_model
from tunesmith.serve.adapters import AdapterCache, AdapterMismatchError, linear_shapes, verify_adapter


def _bare_model(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return load_model(str(tiny_model_dir)).eval()


def test_adapter_for_another_base_model_is_refused(
    tiny_model_dir: Path, adapter_dirs: list[Path], tmp_path: Path
) -> None:
    shapes = linear_shapes(_bare_model(tiny_model_dir))
    verify_adapter(adapter_dirs[0], str(tiny_model_dir), shapes)  # the right base passes
    moved = shutil.copytree(adapter_dirs[0], tmp_path / "moved")
    config = json.loads((moved / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-360M-Instruct"
    (moved / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterMismatchError, match="trained on base model 'HuggingFaceTB/SmolLM2-360M"):
        verify_adapter(moved, str(tiny_model_dir), shapes)
    with pytest.raises(AdapterMismatchError, match="not a LoRA adapter folder"):
        verify_adapter(tmp_path, str(tiny_model_dir), shapes)


def test_adapter_whose_target_modules_do_not_fit_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", seed=1, targets=["q_proj"])
    model = _bare_model(tiny_model_dir)
    shapes = linear_shapes(model)
    renamed = {name.replace("q_proj", "query"): shape for name, shape in shapes.items()}
    with pytest.raises(AdapterMismatchError, match="target modules do not match"):
        verify_adapter(adapter, str(tiny_model_dir), renamed)
    narrower = {name: (in_features // 2, out) for name, (in_features, out) in shapes.items()}
    with pytest.raises(AdapterMismatchError, match="trained on a different model"):
        verify_adapter(adapter, str(tiny_model_dir), narrower)


def test_adapter_that_is_not_plain_lora_is_refused(
    tiny_model_dir: Path, adapter_dirs: list[Path], tmp_path: Path
) -> None:
    shapes = linear_shapes(_bare_model(tiny_model_dir))
    dora = shutil.copytree(adapter_dirs[0], tmp_path / "dora")
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps(config | {"use_dora": True}))
    with pytest.raises(AdapterMismatchError, match="use_dora; only plain LoRA is served"):
        verify_adapter(dora, str(tiny_model_dir), shapes)
    extra = shutil.copytree(adapter_dirs[0], tmp_path / "extra")
    tensors = load_file(extra / "adapter_model.safetensors")
    tensors["base_model.model.lm_head.modules_to_save.weight"] = torch.zeros(2, 2)
    save_file(tensors, extra / "adapter_model.safetensors")
    with pytest.raises(
        AdapterMismatchError, match="modules_to_save.weight', which is not one of a LoRA A and B"
    ):
        verify_adapter(extra, str(tiny_model_dir), shapes)


def test_cache_keeps_at_most_capacity_evicting_least_recent_but_not_pinned(
    tiny_model_dir: Path, adapter_dirs: list[Path]
) -> None:
    base = _bare_model(tiny_model_dir)
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    cache = AdapterCache(base, str(tiny_model_dir), capacity=2)
    cache.ensure("a@1", adapter_dirs[0], pinned=set())
    one = cache.memory_bytes()
    cache.ensure("b@1", adapter_dirs[1], pinned=set())
    assert cache.memory_bytes() == 2 * one  # each adapter costs its own size ...
    assert 2 * one < base_bytes / 5  # ... not a copy of the model
    cache.ensure("a@1", adapter_dirs[0], pinned=set())  # touch: b is now the least recent
    cache.ensure("c@1", adapter_dirs[2], pinned=set())
    assert cache.loaded == ["a@1", "c@1"]
    cache.ensure("b@1", adapter_dirs[1], pinned={"a@1"})
    assert cache.loaded == ["a@1", "b@1"]
    assert any(isinstance(module, StackedLoRALinear) for module in cache.model.modules())
    assert cache.unload("a@1") and cache.unload("b@1") and not cache.unload("b@1")
    assert cache.loaded == [] and cache.memory_bytes() == 0
    assert not any(isinstance(module, StackedLoRALinear) for module in cache.model.modules())  # the bare base
    cache.ensure("a@1", adapter_dirs[0], pinned=set())  # and loadable again
    assert cache.loaded == ["a@1"]


def test_adapter_with_mismatched_ranks_is_refused_before_it_touches_the_cache(
    tiny_model_dir: Path, adapter_dirs: list[Path], tmp_path: Path
) -> None:
    broken = shutil.copytree(adapter_dirs[1], tmp_path / "broken")
    tensors = load_file(broken / "adapter_model.safetensors")
    key = next(k for k in tensors if k.endswith("lora_A.weight"))
    tensors[key] = tensors[key][:-1].contiguous()  # rank 3 where its B has rank 4
    save_file(tensors, broken / "adapter_model.safetensors")
    cache = AdapterCache(_bare_model(tiny_model_dir), str(tiny_model_dir), capacity=1)
    cache.ensure("good@1", adapter_dirs[0], pinned=set())
    size = cache.memory_bytes()
    for _ in range(3):
        with pytest.raises(AdapterMismatchError, match="ranks differ"):
            cache.ensure("broken@1", broken, pinned=set())
    assert cache.loaded == ["good@1"] and cache.memory_bytes() == size  # nothing evicted, nothing grown
