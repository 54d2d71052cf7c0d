"""Classification by label log-likelihood: every label scored after every prompt, one forward per batch.

Owns: the label continuations (each label as the chat template closes an assistant turn, end-of-turn
included, so `balance` and `balance_transfer` are told apart), and scoring them. One row per prompt
holds the prompt once followed by every label; a 4D attention mask lets each label attend to the
prompt and to its own earlier tokens only, and position ids continue from the prompt for every label.
So a batch costs one forward pass over (prompt + all labels) tokens, the prompt is never recomputed
per label, and the output head runs only where a label token is predicted. Nothing is parsed: the
prediction is the label with the highest summed log-probability. With an out-of-scope label, a
prediction whose log-probability falls below a threshold becomes "none of these" instead; the
threshold is calibrated on labelled validation examples (`calibrate_out_of_scope`). Does not own:
prompts (see `baselines`) or metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
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


def predict_labels(scores: torch.Tensor, threshold: float | None = None, out_of_scope: int = -1) -> list[int]:
    """Each row's best label (index into the scored labels), or `out_of_scope` where its score is below
    `threshold` (None: no threshold)."""
    best, predicted = scores.max(dim=1)
    if threshold is not None:
        predicted = torch.where(best < threshold, out_of_scope, predicted)
    return [int(index) for index in predicted]


def calibrate_out_of_scope(scores: torch.Tensor, gold: Sequence[int], out_of_scope: int) -> float:
    """The log-likelihood threshold below which a prediction is "none of these", from validation examples.

    Args:
        scores: (N, L) summed log-probabilities of the L scored labels after each validation prompt.
        gold: each example's label index; `out_of_scope` for the examples that belong to none.
        out_of_scope: the out-of-scope index: L when it is no scored label, else its index among them
            (then a best label of `out_of_scope` is out of scope whatever its score).

    The threshold maximises the mean of in-scope accuracy and out-of-scope recall on these examples, so
    neither side's share of the data decides it (CLINC150's validation split holds 30 in-scope examples
    per out-of-scope one). It lies halfway between the scores on either side of the cut; of equally good
    cuts the lowest is taken (the fewest predictions turned away).
    """
    best, predicted = (tensor.numpy() for tensor in scores.max(dim=1))
    gold_array = np.asarray(gold)
    is_out = gold_array == out_of_scope
    if is_out.all() or not is_out.any():
        raise ValueError(
            "calibrating the out-of-scope threshold needs validation examples both in and out of scope; "
            f"these hold {int(is_out.sum())} out-of-scope and {int((~is_out).sum())} in-scope ones"
        )
    cuts = np.unique(best)  # a prediction is out of scope where its score is below the cut
    right = np.sort(best[~is_out & (predicted == gold_array)])  # in-scope and right, above the cut
    turned_away = np.sort(best[is_out & (predicted != out_of_scope)])  # out of scope only below the cut
    in_scope_accuracy = (len(right) - np.searchsorted(right, cuts, side="left")) / (~is_out).sum()
    caught = (is_out & (predicted == out_of_scope)).sum() + np.searchsorted(turned_away, cuts, side="left")
    objective = (in_scope_accuracy + caught / is_out.sum()) / 2
    index = int(np.argmax(objective))
    return float(cuts[0] if index == 0 else (cuts[index - 1] + cuts[index]) / 2)


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
