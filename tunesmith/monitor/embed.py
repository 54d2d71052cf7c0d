"""Prompts as the base model's mean-pooled hidden states, for the embedding drift test (the same
permutation test as `drift`, on these vectors instead of hashed words).

Owns: batching texts through a causal LM and averaging its last hidden layer over the real tokens.
Does not own: loading the model (see `models.loading`) or the test (see `drift`).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["embed_texts"]


@torch.no_grad()
def embed_texts(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    batch_size: int = 32,
    max_tokens: int = 128,
) -> NDArray[np.float64]:
    """One row per text: the mean of the last hidden layer over its tokens (first `max_tokens`)."""
    device = next(model.parameters()).device
    rows = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, padding_side="right",
            truncation=True,
            max_length=max_tokens,
        )  # fmt: skip
        mask = batch["attention_mask"].to(device)  # (B, T)
        output = model(
            input_ids=batch["input_ids"].to(device), attention_mask=mask, output_hidden_states=True
        )
        hidden = output.hidden_states[-1].float()  # (B, T, H)
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, H)
        rows.append(pooled.cpu().numpy().astype(np.float64))
    return np.concatenate(rows) if rows else np.zeros((0, int(model.config.hidden_size)))
