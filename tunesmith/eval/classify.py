"""Classification by label log-likelihood: every label scored after every prompt, one forward per batch.

Owns: the label continuations (each label as the chat template closes an assistant turn, end-of-turn
included, so `balance` and `balance_transfer` are told apart), and scoring them. One row per prompt
holds the prompt once followed by every label; a 4D attention mask lets each label attend to the
prompt and to its own earlier tokens only, and position ids continue from the prompt for every label.
So a batch costs one forward pass over (prompt + all labels) tokens, the prompt is never recomputed
per label, and the output head runs only where a label token is predicted. Nothing is parsed: the
prediction is the label with the highest summed log-probability. Does not own: prompts (see
`baselines`) or metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.data.records import Message
from tunesmith.data.render import render_text


def label_continuations(tokenizer: PreTrainedTokenizerBase, labels: Sequence[str]) -> list[list[int]]:
    """Token ids of each label as a complete assistant turn (content, then the end-of-turn text)."""
    probe: list[Message] = [{"role": "user", "content": "x"}]
    prompt = render_text(tokenizer, probe, generation_prompt=True)
    continuations = []
    for label in labels:
        full = render_text(
            tokenizer, [*probe, {"role": "assistant", "content": label}], generation_prompt=False
        )
        if not full.startswith(prompt):
            raise ValueError("the chat template does not render the answer after the generation prompt")
        ids = tokenizer(full[len(prompt) :].rstrip(), add_special_tokens=False)["input_ids"]
        continuations.append(list(ids))
    return continuations


@torch.inference_mode()
def score_labels(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    labels: Sequence[str],
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(N, L) summed log-probabilities of each label after each rendered prompt."""
    continuations = label_continuations(tokenizer, labels)
    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    prompt_ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    order = sorted(range(len(prompts)), key=lambda index: len(prompt_ids[index]))
    scores = torch.empty(len(prompts), len(labels))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = _label_batch([prompt_ids[index] for index in chunk], continuations, tokenizer.pad_token_id)
        hidden = decoder(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            position_ids=batch.position_ids.to(device),
            use_cache=False,
        ).last_hidden_state  # (B, T, H)
        rows, queries = batch.query_rows.to(device), batch.query_positions.to(device)
        logits = head(hidden[rows, queries]).float()  # (Q, V): only where a label token is predicted
        token_logprobs = logits.log_softmax(-1).gather(1, batch.targets.to(device)[:, None])[:, 0]
        per_label = torch.zeros(len(chunk) * len(labels), device=device)
        per_label.index_add_(0, batch.owners.to(device), token_logprobs)
        scores[chunk] = per_label.view(len(chunk), len(labels)).cpu()
        if on_batch is not None:
            on_batch(len(chunk))
    return scores


@dataclass(frozen=True)
class _LabelBatch:
    """Rows of [prompt | label 1 | label 2 | ...] with the mask and gather indices to score them."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, 1, T, T) bool, True = may attend
    position_ids: torch.Tensor  # (B, T)
    query_rows: torch.Tensor  # (Q,) row of each scored prediction
    query_positions: torch.Tensor  # (Q,) position whose output predicts the target
    targets: torch.Tensor  # (Q,) the label token predicted there
    owners: torch.Tensor  # (Q,) row * num_labels + label index


def _label_batch(prompts: list[list[int]], continuations: list[list[int]], pad_id: int) -> _LabelBatch:
    labels_length = sum(len(ids) for ids in continuations)
    width = max(len(ids) for ids in prompts) + labels_length
    size = len(prompts)
    input_ids = torch.full((size, width), pad_id, dtype=torch.long)
    mask = torch.zeros((size, 1, width, width), dtype=torch.bool)
    positions = torch.zeros((size, width), dtype=torch.long)
    rows, queries, targets, owners = [], [], [], []
    for row, prompt in enumerate(prompts):
        length = len(prompt)
        input_ids[row, :length] = torch.tensor(prompt)
        mask[row, 0, :length, :length] = torch.ones(length, length, dtype=torch.bool).tril()
        positions[row, :length] = torch.arange(length)
        cursor = length
        for label_index, ids in enumerate(continuations):
            size_label = len(ids)
            span = slice(cursor, cursor + size_label)
            input_ids[row, span] = torch.tensor(ids)
            mask[row, 0, span, :length] = True
            mask[row, 0, span, span] = torch.ones(size_label, size_label, dtype=torch.bool).tril()
            positions[row, span] = torch.arange(length, length + size_label)
            # The prompt's last position predicts the first label token; each label token the next.
            for offset, token in enumerate(ids):
                rows.append(row)
                queries.append(length - 1 if offset == 0 else cursor + offset - 1)
                targets.append(token)
                owners.append(row * len(continuations) + label_index)
            cursor += size_label
        # Padding attends to itself only, so no attention row is empty (an empty row would give NaN).
        tail = torch.arange(cursor, width)
        mask[row, 0, tail, tail] = True
    return _LabelBatch(
        input_ids,
        mask,
        positions,
        torch.tensor(rows),
        torch.tensor(queries),
        torch.tensor(targets),
        torch.tensor(owners),
    )
