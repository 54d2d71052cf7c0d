"""The `merged` export: the adapter folded into the base weights, as a plain transformers checkpoint.

Owns: merging in fp32 (then casting to the requested dtype: merging in bf16 drops small deltas, see
`tunesmith.lora.rounding`), saving weights with the adapter's tokenizer and chat template, and the
merged-vs-unmerged logit check. Does not own: finding the adapter, staging the folder (`core`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tunesmith.export.parity import Chat, check_logits, encode_prompts, last_logits
from tunesmith.models.adapters import load_adapter
from tunesmith.models.loading import load_model, load_tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LOGIT_TOLERANCE = 1e-3  # fp32 merge: W + BA rounds once at 2^-24; what remains is summation order


def export_merged(
    adapter_dir: Path, base_model: str, out: Path, dtype: str, prompts: Sequence[Chat]
) -> dict[str, Any]:
    """Merge the adapter at `adapter_dir` into `base_model` in fp32, check logits, save to `out` in `dtype`.

    Returns the logit parity record (prompts, max difference, tolerance).
    """
    tokenizer = load_tokenizer(str(adapter_dir))
    model = load_adapter(load_model(base_model, torch.float32), adapter_dir).eval()
    ids = encode_prompts(tokenizer, prompts)
    unmerged = last_logits(model, ids)
    merged = model.merge_and_unload()
    parity = check_logits(unmerged, last_logits(merged, ids), LOGIT_TOLERANCE)
    merged = merged.to(DTYPES[dtype])
    merged.config.dtype = DTYPES[dtype]
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return parity
