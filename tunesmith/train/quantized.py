"""QLoRA (`tuning: qlora`): a LoRA adapter trained on a 4-bit NF4 base through bitsandbytes, on CUDA.

Owns: the hardware check (a CUDA GPU and bitsandbytes, made before any data or model is loaded, with an
error that says what this machine lacks), loading the base in 4-bit NF4 with double quantization and
bf16 compute and preparing it for k-bit training (peft's `prepare_model_for_kbit_training`: norms in
fp32, inputs that carry gradients, gradient checkpointing as planned), and the bytes such a base takes
(the dry run's estimate). Does not own: the adapter, which is the same peft LoRA adapter as `tuning:
lora` (added by `tunesmith.train.model`, saved by `tunesmith.train.finish`), so it serves, merges and
exports like one: the merge runs on the full-precision base, never on the 4-bit weights.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from tunesmith.config import ConfigError

# NF4 with double quantization: 4 bits a weight, plus one 8-bit scale per block of 64 weights and one
# fp32 scale of those per 256 blocks (the QLoRA paper's 4.127 bits).
NF4_BYTES_PER_WEIGHT = (4 + 8 / 64 + 32 / (64 * 256)) / 8


def qlora_shortfall() -> list[str]:
    """What this machine lacks for QLoRA (empty: nothing)."""
    missing = []
    if not torch.cuda.is_available():
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a build without CUDA")
        missing.append(f"no CUDA GPU ({build})")
    if importlib.util.find_spec("bitsandbytes") is None:
        missing.append("no bitsandbytes (pip install bitsandbytes)")
    return missing


def require_qlora() -> None:
    """Raise a config error naming what is missing unless this machine can train QLoRA."""
    missing = qlora_shortfall()
    if missing:
        raise ConfigError(
            f"train.tuning: QLoRA needs a CUDA GPU and bitsandbytes; this machine has {' and '.join(missing)}; "
            "use --tuning lora (the same adapter on the unquantized base)"
        )


def load_quantized_model(path: str, *, gradient_checkpointing: bool) -> Any:
    """The model at `path` with its linear layers in 4-bit NF4 on the current CUDA device, ready for
    a LoRA adapter (embeddings and the output layer stay bf16)."""
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    require_qlora()
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    model = AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=quantization,
        dtype=torch.bfloat16,
        device_map={"": torch.cuda.current_device()},  # a 4-bit model cannot be moved after loading
        attn_implementation="sdpa",
    )
    return prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
        model,
        use_gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )


def quantized_weight_bytes(parameters: int, vocab: int, hidden: int) -> int:
    """Bytes of a base with `parameters` weights quantized to NF4 but for its token embeddings (bf16).

    An untied output layer also stays bf16; counted as 4-bit here, which underestimates by a small share.
    """
    embeddings = vocab * hidden
    return int((parameters - embeddings) * NF4_BYTES_PER_WEIGHT + embeddings * 2)
