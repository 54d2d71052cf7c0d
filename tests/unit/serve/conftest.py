"""Serve fixtures: LoRA adapters with distinct random weights on the tiny model, and a store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.models.adapters import add_lora, save_artifact
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry


def make_adapter(
    base_dir: Path, out: Path, seed: int, targets: list[str] | str = "all-linear", rank: int = 4
) -> Path:
    """A saved LoRA adapter whose B matrices are random (peft starts them at zero, a no-op adapter)."""
    model = add_lora(load_model(str(base_dir)), rank=rank, alpha=2 * rank, dropout=0.0, targets=targets)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    save_artifact(model, load_tokenizer(str(base_dir)), out, card="test adapter")
    return out


@pytest.fixture(scope="session")
def adapter_dirs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters")
    return [make_adapter(tiny_model_dir, root / f"adapter{i}", seed=i) for i in range(3)]


@pytest.fixture()
def store(tmp_path: Path) -> ServingStore:
    return ServingStore(Registry(f"sqlite:///{tmp_path / 'registry.db'}").connect())
