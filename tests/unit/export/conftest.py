"""A LoRA adapter on the tiny model whose B matrices are non-zero, so merging changes the weights."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from tunesmith.models.adapters import add_lora, save_artifact
    from tunesmith.models.loading import load_model, load_tokenizer

    directory = tmp_path_factory.mktemp("tiny-adapter")
    torch.manual_seed(1)
    model = add_lora(load_model(str(tiny_model_dir)), rank=4, alpha=8, dropout=0.0, targets="all-linear")
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.3)  # large enough that greedy answers differ by prompt
    save_artifact(model, load_tokenizer(str(tiny_model_dir)), directory, "# tiny adapter\n")
    return directory
