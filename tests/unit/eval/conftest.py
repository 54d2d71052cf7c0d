"""A tiny model whose next-token distributions are peaked and varied, so decodings differ and say something."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def varied_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with every weight scaled by 8: a freshly initialised model's near-uniform logits
    make greedy decoding repeat one blank token, and every beam the same."""
    import torch

    from tunesmith.models.loading import load_model

    directory = tmp_path_factory.mktemp("varied-model")
    model = load_model(str(tiny_model_dir))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(8)
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / name, directory / name)
    return directory
