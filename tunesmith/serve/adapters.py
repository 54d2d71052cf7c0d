"""Adapters loaded into the one served base model: verification and an LRU bound.

Owns: checking that a saved LoRA adapter fits the served base (same base model, every adapted
module present with matching shapes) before it touches the model, and keeping at most N adapters
loaded as named peft adapters. Does not own: which adapter a request gets (see `service`) or
threads (only the engine's worker thread calls this).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import PreTrainedModel

from tunesmith.config import ConfigError
from tunesmith.models.catalog import ModelNotFoundError
from tunesmith.models.loading import resolve_model

_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


class AdapterMismatchError(ConfigError):
    """An adapter cannot be served on this base model; the message says why."""


def linear_shapes(model: PreTrainedModel) -> dict[str, tuple[int, int]]:
    """`{module name: (in_features, out_features)}` of every linear layer of a bare base model."""
    return {
        name: (module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    }


def verify_adapter(adapter_dir: Path, base_path: str, shapes: dict[str, tuple[int, int]]) -> None:
    """Refuse an adapter trained for another base model, or whose weights do not fit this one.

    Args:
        adapter_dir: A saved peft adapter (`adapter_config.json`, `adapter_model.safetensors`).
        base_path: The resolved path (or hub id) of the served base model.
        shapes: `linear_shapes` of the served base model, taken before any adapter was attached.
    """
    config_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not config_path.is_file() or not weights_path.is_file():
        raise AdapterMismatchError(
            f"{adapter_dir}: not a LoRA adapter folder (needs adapter_config.json and adapter_model.safetensors)"
        )
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA":
        raise AdapterMismatchError(
            f"{adapter_dir}: peft_type is {config.get('peft_type')}, only LORA is served"
        )
    trained_on = str(config.get("base_model_name_or_path") or "")
    try:
        resolved = resolve_model(trained_on) if trained_on else ""
    except ModelNotFoundError:
        resolved = trained_on
    if resolved != base_path:
        raise AdapterMismatchError(
            f"{adapter_dir}: trained on base model '{trained_on}', but this server serves '{base_path}'"
        )
    with safe_open(str(weights_path), framework="pt") as weights:
        for key in weights.keys():  # noqa: SIM118  (safe_open is not a mapping)
            if not key.endswith(_LORA_SUFFIXES):
                continue
            module_name = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
            if module_name not in shapes:
                raise AdapterMismatchError(
                    f"{adapter_dir}: adapts module '{module_name}', which this base model has not "
                    "(target modules do not match)"
                )
            shape = weights.get_slice(key).get_shape()
            expected = shapes[module_name][0 if key.endswith("lora_A.weight") else 1]
            actual = shape[1] if key.endswith("lora_A.weight") else shape[0]
            if actual != expected:
                raise AdapterMismatchError(
                    f"{adapter_dir}: '{key}' has size {actual} where the base model's '{module_name}' "
                    f"has {expected} (trained on a different model)"
                )


class AdapterCache:
    """Named LoRA adapters on one base model, at most `capacity` loaded, least recently used evicted."""

    def __init__(self, model: PreTrainedModel, base_path: str, capacity: int) -> None:
        self.base = model
        self.base_path = base_path
        self.capacity = capacity
        self.model: PreTrainedModel | PeftModel = model
        self._shapes = linear_shapes(model)
        self._loaded: OrderedDict[str, Path] = OrderedDict()
        self._snapshot: tuple[str, ...] = ()  # what other threads read; replaced whole, never mutated

    @property
    def loaded(self) -> list[str]:
        """Loaded adapter keys, least recently used first (safe to read from any thread)."""
        return list(self._snapshot)

    def is_peft(self) -> bool:
        return isinstance(self.model, PeftModel)

    def ensure(self, key: str, path: Path, pinned: set[str]) -> None:
        """Load `key` from `path` unless loaded (verifying it first); evict LRU adapters not in `pinned`."""
        if key in self._loaded:
            self._loaded.move_to_end(key)
            self._snapshot = tuple(self._loaded)
            return
        verify_adapter(path, self.base_path, self._shapes)
        if isinstance(self.model, PeftModel):
            self.model.load_adapter(str(path), adapter_name=key, is_trainable=False)
        else:
            self.model = PeftModel.from_pretrained(self.base, str(path), adapter_name=key, is_trainable=False)
        self.model.eval()
        self._loaded[key] = path
        for old in [name for name in self._loaded if name not in pinned and name != key]:
            if len(self._loaded) <= self.capacity:
                break
            self.unload(old)
        self._snapshot = tuple(self._loaded)

    def activate(self, key: str) -> None:
        """Make a loaded adapter the one a plain (not mixed-batch) forward uses."""
        assert isinstance(self.model, PeftModel)
        if self.model.active_adapter != key:
            self.model.set_adapter(key, inference_mode=True)

    def unload(self, key: str) -> bool:
        """Remove a loaded adapter; the last one unwraps the model back to the bare base. False if absent."""
        if key not in self._loaded:
            return False
        assert isinstance(self.model, PeftModel)
        del self._loaded[key]
        self._snapshot = tuple(self._loaded)
        if self._loaded:
            if self.model.active_adapter == key:  # requests name their adapter; this only keeps peft quiet
                self.model.set_adapter(next(iter(self._loaded)))
            self.model.delete_adapter(key)
        else:
            self.base = self.model.unload()
            self.model = self.base
        return True

    def memory_bytes(self) -> int:
        """Bytes of LoRA weights currently in memory."""
        if not isinstance(self.model, PeftModel):
            return 0
        return sum(p.numel() * p.element_size() for n, p in self.model.named_parameters() if "lora_" in n)
