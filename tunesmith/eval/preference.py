"""Evaluation on preference pairs: how often an adapter prefers the chosen answer, and by how much.

Owns: each pair's implicit DPO reward margin β·((π_c − ref_c) − (π_r − ref_r)) of an adapter against
its reference (the base model with the adapter disabled, or the adapter the run started from, loaded
beside it on the same base), preference accuracy (the share of pairs with a positive margin) and the
mean margin, each with a 95% bootstrap interval. Log-probabilities are summed over the answer tokens
of the rendered conversation, as in training. Does not own: generation metrics (`evaluate`), training.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.data.records import Example, Message, PreferenceExample
from tunesmith.data.render import IGNORE_INDEX, render_example
from tunesmith.eval.stats import DEFAULT_SAMPLES, bootstrap_interval, resample_indices
from tunesmith.models.adapters import load_adapter
from tunesmith.models.loading import load_model, load_tokenizer, resolve_model


def evaluate_preferences(
    base_model: str,
    adapter_dir: Path,
    pairs: list[PreferenceExample],
    *,
    beta: float,
    reference_adapter: Path | None = None,
    max_seq_len: int = 1024,
    samples: int = DEFAULT_SAMPLES,
) -> dict[str, Any]:
    """Preference accuracy and mean reward margin of the adapter `adapter_dir` on `pairs`, with intervals."""
    path = resolve_model(base_model)
    tokenizer = load_tokenizer(path)
    model: Any = load_adapter(load_model(path), adapter_dir, name="policy")
    if reference_adapter is not None:
        model.load_adapter(str(reference_adapter), adapter_name="reference", is_trainable=False)
    model.eval()
    model.set_adapter("policy")
    policy = _log_probs(model, tokenizer, pairs, max_seq_len, nullcontext())
    if reference_adapter is None:
        reference = _log_probs(model, tokenizer, pairs, max_seq_len, model.disable_adapter())
    else:
        model.set_adapter("reference")
        reference = _log_probs(model, tokenizer, pairs, max_seq_len, nullcontext())
    margins = beta * ((policy[:, 0] - reference[:, 0]) - (policy[:, 1] - reference[:, 1]))
    indices = resample_indices(len(pairs), samples)
    stats = margins[:, None]
    accuracy = bootstrap_interval((stats > 0).astype(float), lambda rows: float(rows.mean()), indices)
    margin = bootstrap_interval(stats, lambda rows: float(rows.mean()), indices)
    return {
        "task": "preference",
        "examples": len(pairs),
        "beta": beta,
        "reference": str(reference_adapter) if reference_adapter else "base (adapter disabled)",
        "metrics": {"preference_accuracy": accuracy.to_dict(), "reward_margin": margin.to_dict()},
    }


@torch.no_grad()
def _log_probs(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[PreferenceExample],
    max_seq_len: int,
    context: AbstractContextManager[Any],
) -> np.ndarray:
    """`(P, 2)` summed log-probabilities of each pair's chosen and rejected answer tokens."""
    values = np.zeros((len(pairs), 2))
    with context:
        for index, pair in enumerate(pairs):
            for side, answer in enumerate((pair.chosen, pair.rejected)):
                messages: list[Message] = [*pair.prompt, {"role": "assistant", "content": answer}]
                rendered = render_example(
                    tokenizer, Example(messages=messages, source=pair.source), max_seq_len
                )
                logits = model(input_ids=torch.tensor([rendered.input_ids])).logits[0].float()
                targets = torch.tensor(rendered.targets)
                keep = targets != IGNORE_INDEX
                picked = torch.log_softmax(logits[keep], dim=-1).gather(1, targets[keep][:, None])
                values[index, side] = float(picked.sum())
    return values
