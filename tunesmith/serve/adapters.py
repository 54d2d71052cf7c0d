"""Adapters loaded into the one served base model: verification, slots and an LRU bound.

Owns: checking that a saved LoRA adapter fits the served base (same base model, every adapted
module present with matching shapes, plain LoRA only) before it touches the model; keeping at most N
adapters loaded, each in a slot of the stacked layers (see `tunesmith.lora.stacked`): the adapted linear layers become
`StackedLoRALinear` while any adapter is loaded and plain again when the last one leaves; routing a
forward's rows to their adapters' slots. Does not own: which adapter a request gets (see `service`) or
threads (only the engine's worker thread calls this).

Slots: a new adapter takes the lowest free slot (an unloaded adapter's slot is zeroed and reused), else
every stacked layer grows by one; ranks are zero-padded to the largest loaded (a rank-64 adapter among
rank-16 ones costs each slot rank 64). The stacks are dropped with the last adapter.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import PreTrainedModel

from tunesmith.config import ConfigError
from tunesmith.lora.stacked import Router, StackedLoRALinear, read_lora, route
from tunesmith.models.catalog import ModelNotFoundError
from tunesmith.models.loading import resolve_model

_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight")
# peft options that change the forward without adding tensors; served adapters are plain LoRA
_UNSERVED_OPTIONS = (
    "use_dora",
    "rank_pattern",
    "alpha_pattern",
    "alora_invocation_tokens",
    "layer_replication",
)


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
    for option in _UNSERVED_OPTIONS:
        if config.get(option):
            raise AdapterMismatchError(f"{adapter_dir}: uses peft's {option}; only plain LoRA is served")
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
        keys = set(weights.keys())
        for key in keys:
            if not key.endswith(_LORA_SUFFIXES) or key.replace(".lora_A.", ".lora_B.") not in keys:
                raise AdapterMismatchError(
                    f"{adapter_dir}: holds '{key}', which is not one of a LoRA A and B pair; only plain LoRA "
                    "on linear layers is served"
                )
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
            if key.endswith("lora_A.weight"):  # A (r, in) and B (out, r) must share the rank r
                b_shape = weights.get_slice(key.replace(".lora_A.", ".lora_B.")).get_shape()
                if len(shape) != 2 or len(b_shape) != 2 or shape[0] != b_shape[1]:
                    raise AdapterMismatchError(
                        f"{adapter_dir}: '{key}' has shape {list(shape)} and its B {list(b_shape)}: the "
                        "ranks differ (a damaged adapter)"
                    )


def check_adapter_folder(adapter_dir: Path) -> None:
    """`verify_adapter` against the base model the adapter names, built on the meta device (no weights).

    The check `tunesmith adapters register` runs, so adapters made by peft/TRL, Unsloth or LLaMA-Factory
    are held to what the server will demand of them before they are recorded.
    """
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file():
        raise AdapterMismatchError(f"{adapter_dir}: not a LoRA adapter folder (no adapter_config.json)")
    base = str(json.loads(config_path.read_text(encoding="utf-8")).get("base_model_name_or_path") or "")
    if not base:
        raise AdapterMismatchError(f"{adapter_dir}: adapter_config.json names no base_model_name_or_path")
    base_path = resolve_model(base)
    verify_adapter(adapter_dir, base_path, meta_linear_shapes(base_path))


def meta_linear_shapes(base_path: str) -> dict[str, tuple[int, int]]:
    """`linear_shapes` of the base model at `base_path`, built on the meta device (no weights read)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_path))
    return linear_shapes(model)


class AdapterCache:
    """Named LoRA adapters on one base model, at most `capacity` loaded, least recently used evicted."""

    def __init__(self, model: PreTrainedModel, base_path: str, capacity: int) -> None:
        self.model = model
        self.base_path = base_path
        self.capacity = capacity
        self._shapes = linear_shapes(model)
        self._loaded: OrderedDict[str, Path] = OrderedDict()
        self._snapshot: tuple[str, ...] = ()  # what other threads read; replaced whole, never mutated
        self._slots: dict[str, int] = {}  # adapter key -> its slot in every stacked layer
        self._free: list[int] = []  # slots of unloaded adapters, all zero
        self._size = (0, 0)  # (slots, rank) of every stacked layer
        self._layers: dict[str, StackedLoRALinear] = {}  # module name -> the stacked layer in its place
        self._router = Router()

    @property
    def loaded(self) -> list[str]:
        """Loaded adapter keys, least recently used first (safe to read from any thread)."""
        return list(self._snapshot)

    def ensure(self, key: str, path: Path, pinned: set[str]) -> None:
        """Load `key` from `path` unless loaded (verifying it first); evict LRU adapters not in `pinned`."""
        if key in self._loaded:
            self._loaded.move_to_end(key)
            self._snapshot = tuple(self._loaded)
            return
        verify_adapter(path, self.base_path, self._shapes)
        layers = read_lora(path)
        for old in [name for name in self._loaded if name not in pinned]:
            if len(self._loaded) < self.capacity:
                break
            self.unload(old)  # before the load, so that its slot is reused
        self._slots[key] = self._place(layers)
        self._loaded[key] = path
        self._snapshot = tuple(self._loaded)

    def _place(self, layers: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Write an adapter's layers into a free slot (growing the stacks if needed); its slot."""
        slot = min(self._free) if self._free else self._size[0]
        if self._free:
            self._free.remove(slot)
        size = (max(self._size[0], slot + 1), max([self._size[1], *(a.shape[0] for a, _ in layers.values())]))
        if size != self._size:
            for layer in self._layers.values():
                layer.resize(*size)
            self._size = size
        for name, (a, b) in layers.items():
            if name not in self._layers:
                base = self.model.get_submodule(name)
                assert isinstance(base, torch.nn.Linear)
                self._layers[name] = StackedLoRALinear(base, *self._size, router=self._router)
                self.model.set_submodule(name, self._layers[name])
            self._layers[name].put(slot, a, b)
        return slot

    def unload(self, key: str) -> bool:
        """Remove a loaded adapter; the last one turns the model back into the bare base. False if absent."""
        if key not in self._loaded:
            return False
        del self._loaded[key]
        self._snapshot = tuple(self._loaded)
        slot = self._slots.pop(key)
        if not self._loaded:
            for name, layer in self._layers.items():
                self.model.set_submodule(name, layer.base)
            self._layers, self._free, self._size = {}, [], (0, 0)
            return True
        for layer in self._layers.values():
            layer.clear(slot)
        self._free.append(slot)
        return True

    @contextmanager
    def routed(self, adapters: list[str | None]) -> Iterator[None]:
        """Within this block a forward of the model runs batch row i through `adapters[i]` (None: the base).

        Every named adapter must be loaded: a missing one raises rather than serving the base in its name.
        """
        device = next(self.model.parameters()).device
        self._router.current = route([None if key is None else self._slots[key] for key in adapters], device)
        try:
            yield
        finally:
            self._router.current = None

    def memory_bytes(self) -> int:
        """Bytes of the stacked LoRA weights in memory (free slots and rank padding included)."""
        return sum(
            t.numel() * t.element_size() for layer in self._layers.values() for t in (layer.a, layer.b)
        )
