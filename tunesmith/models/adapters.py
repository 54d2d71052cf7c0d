"""LoRA adapters on a base model: add, save with tokenizer and model card, load.

Owns: the peft calls and the on-disk adapter layout (`adapter_model.safetensors`,
`adapter_config.json`, tokenizer files with the chat template, `README.md` model card).
Does not own: training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def add_lora(
    model: PreTrainedModel, rank: int, alpha: int, dropout: float, targets: list[str] | str
) -> PeftModel:
    """Wrap `model` with fresh LoRA adapters; only the adapters are trainable."""
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, config)


def load_adapter(model: PreTrainedModel, adapter_dir: Path, name: str = "default") -> PeftModel:
    """Attach a saved adapter to `model` for inference."""
    return PeftModel.from_pretrained(model, str(adapter_dir), adapter_name=name, is_trainable=False)


def load_trainable_adapter(model: PreTrainedModel, adapter_dir: Path) -> PeftModel:
    """Attach a saved adapter to `model` to train it further (its own rank, targets and dropout)."""
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model a saved adapter was trained on, as peft recorded it (`base_model_name_or_path`)."""
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{adapter_dir}: not an adapter folder (no adapter_config.json)")
    return str(json.loads(config_file.read_text(encoding="utf-8"))["base_model_name_or_path"])


def save_artifact(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: Path,
    card: str,
) -> None:
    """Save an adapter (or full model) with its tokenizer, chat template and model card."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    (directory / "README.md").write_text(card, encoding="utf-8")


def model_card(
    *,
    run_id: str,
    base_model: str,
    method: str,
    data_hash: str,
    hyperparameters: dict[str, Any],
    metrics: dict[str, Any],
) -> str:
    """A Hugging Face style model card with YAML front matter."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in hyperparameters.items())
    metric_rows = "\n".join(f"| {key} | {value} |" for key, value in metrics.items() if value is not None)
    library = "transformers" if method == "full" else "peft"
    return f"""---
base_model: {base_model}
library_name: {library}
tags: [tunesmith, {method}]
---
# {run_id}

Fine-tuned from `{base_model}` with tunesmith ({method}).

- Training data hash (sha256 of normalised examples): `{data_hash}`

## Hyperparameters
| name | value |
|---|---|
{rows}

## Metrics
| name | value |
|---|---|
{metric_rows}
"""
