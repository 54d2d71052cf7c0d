"""Classification by label log-likelihood: each prompt prefilled once, every label scored on its cache.

Owns: the label continuations (each label as the chat template closes an assistant turn, end-of-turn
included, so `balance` and `balance_transfer` are told apart), and scoring them. The labels' token
sequences form a trie (`label_trie`): labels that open with the same tokens share those nodes, and each
node's token is computed once per prompt. The opening every prompt shares (the chat template's system
text, a zero-shot instruction naming every label, few-shot demonstrations) is prefilled once per call
into a KV cache (transformers' `DynamicCache`); each batch of prompts then runs one forward on that
cache over each prompt's own tokens followed by the trie's inner nodes, a 4D mask letting a trie node
attend to its prompt and its ancestors only (tree attention), positions continuing from its prompt.
Leaves are never inputs: a node's log-probability is read from its parent's output, and a leaf has no
children (every label's end-of-turn token is one). So the output head runs where a label token is
predicted only: at each prompt's last token and at the inner nodes. A label's log-probability is the
sum over its path. All levels of the trie run in one forward rather than one per level: the same
tokens, fewer calls, and no cache to copy per branch. Nothing is parsed: the prediction is the
label with the highest summed log-probability. With an out-of-scope label, a prediction whose
log-probability falls below a threshold becomes "none of these" instead; the threshold is calibrated on
labelled validation examples (`calibrate_out_of_scope`). Evaluation needs only each row's best label and
score: `label_search.score_best_labels` finds them on the same trie and prefix without scoring every
label; this module's exhaustive scores serve what needs them all (the guardrail classifier's
probabilities). Does not own: prompts (see `baselines`) or metrics. Measured figures:
benchmarks/RESULTS.md, "Label scoring".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

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


@dataclass(frozen=True)
class LabelTrie:
    """Label token sequences as a trie; nodes are numbered so that a parent comes before its children."""

    tokens: list[int]  # each node's token
    parents: list[int]  # each node's parent node, -1 under the root (predicted by the prompt's last token)
    depths: list[int]  # 0 under the root
    paths: list[list[int]]  # each label's nodes, root to end (a label may end on another's inner node)


def label_trie(continuations: Sequence[Sequence[int]]) -> LabelTrie:
    """The trie of `continuations` (label token ids); a shared opening is one path of nodes."""
    tokens: list[int] = []
    parents: list[int] = []
    depths: list[int] = []
    children: dict[tuple[int, int], int] = {}  # (parent, token) -> node
    paths = []
    for ids in continuations:
        if not ids:
            raise ValueError("a label renders to no tokens")
        node, path = -1, []
        for depth, token in enumerate(ids):
            if (node, token) not in children:
                children[node, token] = len(tokens)
                tokens.append(token)
                parents.append(node)
                depths.append(depth)
            node = children[node, token]
            path.append(node)
        paths.append(path)
    return LabelTrie(tokens, parents, depths, paths)


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
    """(N, L) summed log-probabilities of each label after each rendered prompt.

    The prompts' shared opening is computed once per call, then `batch_size` prompts at a time with every
    label on top (see the module docstring); the result equals one forward per (prompt, label) pair.
    """
    if not prompts:
        return torch.empty(0, len(labels))
    trie = label_trie(label_continuations(tokenizer, labels))
    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    prompt_ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    shared = shared_prefix_length(prompt_ids)
    prefix = prefill_prefix(decoder, prompt_ids[0][:shared], device) if shared else []
    layout = _TrieLayout.of(trie, len(labels), device)
    order = sorted(range(len(prompts)), key=lambda index: len(prompt_ids[index]))
    scores = torch.empty(len(prompts), len(labels))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        remainders = [prompt_ids[index][shared:] for index in chunk]
        batch = _trie_batch(remainders, layout, shared, tokenizer.pad_token_id)
        size = len(chunk)
        # The shared prefix's keys and values, one view per row; the cache copies them when it appends.
        cache = DynamicCache([(k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1)) for k, v in prefix])
        hidden = decoder(
            input_ids=batch.input_ids.to(device),
            attention_mask=batch.attention_mask.to(device),
            position_ids=batch.position_ids.to(device),
            cache=cache,
            use_cache=True,
        ).last_hidden_state  # (B, T, H)
        queries = hidden.gather(
            1, batch.query_positions.to(device)[:, :, None].expand(-1, -1, hidden.shape[-1])
        )
        scores[chunk] = _label_logprobs(head, queries, layout).cpu()
        if on_batch is not None:
            on_batch(size)
    return scores


def shared_prefix_length(prompt_ids: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt opens with, leaving at least the last token of each prompt (it predicts the
    first label token, so its output is needed per prompt)."""
    first = prompt_ids[0]
    length = min(len(ids) for ids in prompt_ids) - 1
    for ids in prompt_ids[1:]:
        length = next((i for i in range(length) if ids[i] != first[i]), length)
    return max(length, 0)


def prefill_prefix(
    decoder: torch.nn.Module, ids: list[int], device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (1, heads, P, head size) keys and values of the shared prefix `ids`."""
    cache = DynamicCache()
    decoder(input_ids=torch.tensor([ids], device=device), cache=cache, use_cache=True)
    return [(keys, values) for keys, values, _ in cache]


@dataclass(frozen=True)
class _TrieLayout:
    """What runs through the model for a trie, and where each node's log-probability is read.

    Only inner nodes (those with children) are model inputs: a node's log-probability is read from its
    parent's output, so a leaf's own output is never needed (every label's end-of-turn token is a leaf).
    """

    inner_tokens: list[int]  # (I,) the inner nodes' tokens, parents first
    inner_depths: list[int]  # (I,)
    ancestors: torch.Tensor  # (I, I) bool: inner node j is i or one of its ancestors
    predictors: torch.Tensor  # (N,) query of each node's parent: 0 the prompt's last token, 1 + i inner i
    tokens: torch.Tensor  # (N,) each node's token
    membership: torch.Tensor  # (N, L) 1 where node n is on label l's path

    @classmethod
    def of(cls, trie: LabelTrie, num_labels: int, device: torch.device) -> _TrieLayout:
        inner = sorted({parent for parent in trie.parents if parent >= 0})
        index_of = {node: index for index, node in enumerate(inner)}
        ancestors = torch.eye(len(inner), dtype=torch.bool)
        for index, node in enumerate(inner):  # a parent comes first, so its row is complete
            if trie.parents[node] >= 0:
                ancestors[index] |= ancestors[index_of[trie.parents[node]]]
        predictors = [0 if parent < 0 else 1 + index_of[parent] for parent in trie.parents]
        membership = torch.zeros(len(trie.tokens), num_labels)
        for label, path in enumerate(trie.paths):
            membership[path, label] = 1.0
        return cls(
            [trie.tokens[node] for node in inner],
            [trie.depths[node] for node in inner],
            ancestors,
            torch.tensor(predictors, device=device),
            torch.tensor(trie.tokens, device=device),
            membership.to(device),
        )


def _label_logprobs(head: torch.nn.Module, queries: torch.Tensor, layout: _TrieLayout) -> torch.Tensor:
    """(B, L) label log-probabilities from the hidden states (B, Q, H) of each row's predicting queries."""
    rows = []
    for row in queries:  # one row's logits at a time: (Q, V) in fp32 is tens of MB
        # In fp32 whatever the model's dtype; the kernel casts as it reads (no fp32 copy of the logits).
        logprobs = torch.log_softmax(head(row), dim=-1, dtype=torch.float32)  # (Q, V)
        rows.append(logprobs[layout.predictors, layout.tokens])  # (N,)
    return torch.stack(rows) @ layout.membership  # (B, N) @ (N, L)


OutOfScopeObjective = Literal["balanced", "accuracy"]


def predict_labels(scores: torch.Tensor, threshold: float | None = None, out_of_scope: int = -1) -> list[int]:
    """Each row's best label (index into the scored labels), or `out_of_scope` where its score is below
    `threshold` (None: no threshold)."""
    best, predicted = scores.max(dim=1)
    if threshold is not None:
        predicted = torch.where(best < threshold, out_of_scope, predicted)
    return [int(index) for index in predicted]


def calibrate_out_of_scope(
    scores: torch.Tensor, gold: Sequence[int], out_of_scope: int, objective: OutOfScopeObjective = "balanced"
) -> float:
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
    if objective == "balanced":
        value = (in_scope_accuracy + caught / is_out.sum()) / 2
    else:
        value = (in_scope_accuracy * (~is_out).sum() + caught) / len(gold_array)
    index = int(np.argmax(value))
    return float(cuts[0] if index == 0 else (cuts[index - 1] + cuts[index]) / 2)


@dataclass(frozen=True)
class _TrieBatch:
    """Rows of [prompt's own tokens | padding | the trie's inner nodes] on the shared prefix, with their mask."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, 1, T, P + T) bool, True = may attend; P the shared prefix
    position_ids: torch.Tensor  # (B, T)
    query_positions: torch.Tensor  # (B, 1 + I): the prompt's last token, then each inner node


def _trie_batch(prompts: list[list[int]], layout: _TrieLayout, shared: int, pad_id: int) -> _TrieBatch:
    size, inner = len(prompts), len(layout.inner_tokens)
    width = max(len(ids) for ids in prompts)  # S: the longest prompt remainder
    lengths = torch.tensor([len(ids) for ids in prompts])  # (B,)
    input_ids = torch.full((size, width + inner), pad_id, dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, : len(ids)] = torch.tensor(ids)
    input_ids[:, width:] = torch.tensor(layout.inner_tokens, dtype=torch.long)
    mask = torch.zeros((size, 1, width + inner, shared + width + inner), dtype=torch.bool)
    mask[..., :shared] = True
    # The prompt's tokens attend causally; padding too (its output is unused, and no row is empty).
    mask[:, 0, :width, shared : shared + width] = torch.ones(width, width, dtype=torch.bool).tril()
    mask[:, 0, width:, shared : shared + width] = (torch.arange(width) < lengths[:, None])[:, None, :]
    mask[:, 0, width:, shared + width :] = layout.ancestors
    positions = torch.empty((size, width + inner), dtype=torch.long)
    positions[:, :width] = shared + torch.arange(width)
    positions[:, width:] = shared + lengths[:, None] + torch.tensor(layout.inner_depths, dtype=torch.long)
    query_positions = torch.empty((size, 1 + inner), dtype=torch.long)
    query_positions[:, 0] = lengths - 1
    query_positions[:, 1:] = width + torch.arange(inner)
    return _TrieBatch(input_ids, mask, positions, query_positions)
