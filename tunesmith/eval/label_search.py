"""Each prompt's best label, exactly, without scoring every label: branch and bound over the label trie.

Owns: `score_best_labels`, what classification evaluation needs of label scoring (each row's best label
and its summed log-probability: the prediction, and the out-of-scope threshold's input), computed on
the same label trie and shared-prefix cache as `classify.score_labels`, which scores every label.

Every token's log-probability is at most 0, so a trie node's summed log-probability bounds every label
below it. Per prompt: the prompt runs once (its shared opening prefilled once per call, as in
`score_labels`), giving the first label token's log-probabilities; then a greedy descent (the best
child each step; a chain of only children in the same step) reaches a complete label, whose score is
a lower bound on the best; then every open node whose score can still reach that bound runs with its
whole subtree, in one last step, and the labels below are scored; every other label is below the
bound. The result is exact: the best label and score are those of scoring every label (up to the
rounding of different batch shapes). A node is kept within `PRUNE_MARGIN` of the bound, so rounding
(a log-softmax of a near-certain token can be a hair above 0) never prunes the best. For a fine-tuned
model nearly everything is pruned after the first token: a prompt costs its own tokens and a handful
of nodes instead of every inner node of the trie. For an unsure model (a base model zero-shot) most
of the trie survives, and the cost is about that of scoring every label (benchmarks/RESULTS.md, "Label
scoring").

The descent's steps run every row's chosen nodes in one forward on the batch's KV cache
(`GrowingCache`: each step writes in place), one token per node at its depth's position, a 4D mask
letting it attend to the shared opening, its prompt and its expanded ancestors only; rows that chose
fewer nodes are padded. The last step runs the rows in groups of similar sizes, each group on a copy
of its rows' cache: what survives differs widely between rows, and a step is padded to its largest.
Does not own: the trie, label rendering or the exhaustive scores (see `classify`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.eval.classify import (
    LabelTrie,
    label_continuations,
    label_trie,
    prefill_prefix,
    shared_prefix_length,
)
from tunesmith.models.decode import GrowingCache

PRUNE_MARGIN = 1e-4  # nats: a node this far below the best complete label is still expanded (rounding)
GROUP_SLACK = 1.25  # the last step's padding: at most a quarter more tokens than the rows' own
HEAD_ROWS = 256  # output-head rows per log-softmax: (256, V) in fp32 is ~50 MB for a 49k vocabulary


@torch.inference_mode()
def score_best_labels(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    labels: Sequence[str],
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(N, L) label log-probabilities where they decide the best label; -inf where a label cannot be it.

    Each row's maximum and argmax equal `classify.score_labels`' (what `predict_labels` and
    `calibrate_out_of_scope` read); a finite entry is that label's exact summed log-probability (the
    labels completed on the way), -inf a label proven below the row's best. `batch_size` prompts run
    together (see the module docstring).
    """
    scores = torch.full((len(prompts), len(labels)), -math.inf)
    if not prompts or not labels:
        return scores
    tree = _Tree.of(label_trie(label_continuations(tokenizer, labels)))
    device = next(model.parameters()).device
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    prompt_ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    shared = shared_prefix_length(prompt_ids)
    prefix = prefill_prefix(decoder, prompt_ids[0][:shared], device) if shared else []
    order = sorted(range(len(prompts)), key=lambda index: len(prompt_ids[index]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        remainders = [prompt_ids[index][shared:] for index in chunk]
        searches = _search(decoder, head, prefix, remainders, tree, tokenizer.pad_token_id, device)
        for index, search in zip(chunk, searches, strict=True):
            for node, ending in tree.ends.items():
                if node in search.scores:
                    scores[index, ending] = search.scores[node]
        if on_batch is not None:
            on_batch(len(chunk))
    return scores


@dataclass(frozen=True)
class _Tree:
    """The trie as the search walks it."""

    trie: LabelTrie
    children: dict[int, list[int]]  # node -> its children; -1 -> the nodes under the root
    ends: dict[int, list[int]]  # node -> the labels whose path ends there

    @classmethod
    def of(cls, trie: LabelTrie) -> _Tree:
        children: dict[int, list[int]] = {}
        for node, parent in enumerate(trie.parents):
            children.setdefault(parent, []).append(node)
        ends: dict[int, list[int]] = {}
        for label, path in enumerate(trie.paths):
            ends.setdefault(path[-1], []).append(label)
        return cls(trie, children, ends)

    def inner_subtree(self, node: int) -> list[int]:
        """`node` and the nodes with children below it, parents first."""
        found = [node]
        for child in self.children[node]:
            if child in self.children:
                found.extend(self.inner_subtree(child))
        return found

    def ancestors(self, node: int) -> list[int]:
        found, parent = [], self.trie.parents[node]
        while parent >= 0:
            found.append(parent)
            parent = self.trie.parents[parent]
        return found


class _RowSearch:
    """One prompt's branch and bound: the nodes scored so far, the best complete label, what is open."""

    def __init__(self, tree: _Tree) -> None:
        self.tree = tree
        self.scores: dict[int, float] = {}  # node -> its path's summed log-probability
        self.columns: dict[int, int] = {}  # expanded node -> the cache column of its token
        self.open: set[int] = set()  # scored nodes with children, not yet expanded
        self.best = -math.inf  # the best complete label's score: the bound
        self.last: list[int] = []  # the children scored last (where the greedy descent goes on)

    def add(self, parent: int, logprobs: list[float]) -> None:
        """Score `parent`'s children (-1: the root's) from the log-probabilities of their tokens."""
        base = 0.0 if parent < 0 else self.scores[parent]
        self.last = self.tree.children[parent]
        for child, logprob in zip(self.last, logprobs, strict=True):
            self.scores[child] = base + logprob
            if child in self.tree.ends:
                self.best = max(self.best, base + logprob)
            if child in self.tree.children and child not in self.columns:  # not run in the same step
                self.open.add(child)

    def descend(self) -> list[int]:
        """The greedy descent's next nodes while no label is complete: the best child of the node run
        last, with its chain of only children (the descent goes through them anyway); else none."""
        if self.best > -math.inf:
            return []
        chosen = [max(self.last, key=self.scores.__getitem__)]  # no label complete: all are open
        self.open.remove(chosen[0])
        while (
            len(self.tree.children[chosen[-1]]) == 1
            and self.tree.children[chosen[-1]][0] in self.tree.children
        ):
            chosen.append(self.tree.children[chosen[-1]][0])
        return chosen

    def survivors(self) -> list[int]:
        """Every open node that can still beat the bound, with all the inner nodes below it, parents
        first (the other open nodes never can: the bound only rises)."""
        bound = self.best - PRUNE_MARGIN
        chosen = []
        for node in sorted(node for node in self.open if self.scores[node] >= bound):
            chosen.extend(self.tree.inner_subtree(node))  # open nodes' subtrees are disjoint
        self.open.clear()
        return chosen


def _search(
    decoder: torch.nn.Module,
    head: torch.nn.Module,
    prefix: list[tuple[torch.Tensor, torch.Tensor]],
    remainders: list[list[int]],
    tree: _Tree,
    pad_id: int,
    device: torch.device,
) -> list[_RowSearch]:
    """Run the branch and bound of a batch of prompts (their tokens after the shared prefix) to the end."""
    size, shared = len(remainders), (prefix[0][0].shape[2] if prefix else 0)
    cache = GrowingCache()
    for layer, (keys, values) in enumerate(prefix):  # one copy of the prefix per row, with room to grow
        cache.update(keys.expand(size, -1, -1, -1), values.expand(size, -1, -1, -1), layer)
    input_ids, mask, positions = _prompt_batch(remainders, shared, pad_id)
    hidden = _decode(decoder, input_ids, mask, positions, cache, device)  # (B, S, H)
    lengths = [len(ids) for ids in remainders]
    searches = [_RowSearch(tree) for _ in remainders]
    last = hidden[torch.arange(size), torch.tensor(lengths) - 1]  # (B, H): predicts the first label token
    for search, logprobs in zip(searches, _child_logprobs(head, last, tree, [-1] * size), strict=True):
        search.add(-1, logprobs)
    while any(chosen := [search.descend() for search in searches]):
        _expand(decoder, head, cache, searches, chosen, lengths, shared, pad_id, device)
    # The survivors' subtrees run whole, in one last step, in groups of rows of similar sizes, each
    # group on a copy of its rows' cache: rows differ widely in what survives (none for a confident
    # model, most of the trie for an unsure one), and a step is padded to its largest row.
    final = [search.survivors() for search in searches]
    for group in _groups([len(nodes) for nodes in final]):
        rows = torch.tensor(group, device=device)
        copy = DynamicCache([(keys[rows], values[rows]) for keys, values, _ in cache])
        chosen = [final[row] for row in group]
        picked = [searches[row] for row in group]
        _expand(decoder, head, copy, picked, chosen, [lengths[row] for row in group], shared, pad_id, device)
    return searches


def _decode(
    decoder: torch.nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache,
    device: torch.device,
) -> torch.Tensor:
    """The decoder's last hidden states for a batch of columns appended to `cache` (which grows)."""
    hidden: torch.Tensor = decoder(
        input_ids=input_ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        cache=cache,
        use_cache=True,
    ).last_hidden_state
    return hidden


def _groups(sizes: list[int]) -> list[list[int]]:
    """Rows with work (size > 0), largest first, grouped while padding to the group's largest costs at
    most `GROUP_SLACK` times the group's own work."""
    groups: list[list[int]] = []
    for row in sorted((row for row, size in enumerate(sizes) if size), key=lambda row: -sizes[row]):
        group = groups[-1] if groups else []
        if group and (len(group) + 1) * sizes[group[0]] <= GROUP_SLACK * (
            sum(sizes[r] for r in group) + sizes[row]
        ):
            group.append(row)
        else:
            groups.append([row])
    return groups


def _expand(
    decoder: torch.nn.Module,
    head: torch.nn.Module,
    cache: DynamicCache,
    searches: list[_RowSearch],
    chosen: list[list[int]],
    lengths: list[int],
    shared: int,
    pad_id: int,
    device: torch.device,
) -> None:
    """Run each row's chosen nodes (parents first) in one forward on `cache`; score their children."""
    input_ids, mask, positions = _step_batch(
        searches, chosen, lengths, shared, cache.get_seq_length(), pad_id
    )
    hidden = _decode(decoder, input_ids, mask, positions, cache, device)  # (B, K, H)
    rows = [row for row, nodes in enumerate(chosen) for _ in nodes]
    slots = [slot for nodes in chosen for slot in range(len(nodes))]
    nodes = [node for row_nodes in chosen for node in row_nodes]
    queries = hidden[torch.tensor(rows), torch.tensor(slots)]  # (Q, H)
    for row, node, logprobs in zip(
        rows, nodes, _child_logprobs(head, queries, searches[0].tree, nodes), strict=True
    ):
        searches[row].add(node, logprobs)


def _child_logprobs(
    head: torch.nn.Module, queries: torch.Tensor, tree: _Tree, nodes: list[int]
) -> list[list[float]]:
    """Each node's children's token log-probabilities, from the hidden state (Q, H) of its query."""
    found = []
    for start in range(0, len(nodes), HEAD_ROWS):
        # In fp32 whatever the model's dtype; the kernel casts as it reads (no fp32 copy of the logits).
        logprobs = torch.log_softmax(head(queries[start : start + HEAD_ROWS]), dim=-1, dtype=torch.float32)
        for row, node in zip(logprobs, nodes[start : start + HEAD_ROWS], strict=True):
            tokens = [tree.trie.tokens[child] for child in tree.children[node]]
            found.append(row[tokens].tolist())
    return found


def _prompt_batch(
    prompts: list[list[int]], shared: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, S) ids, (B, 1, S, P + S) mask and (B, S) positions of each prompt's tokens after the prefix P,
    right-padded: causal, padding too (its output is unused, and no attention row is empty)."""
    size, width = len(prompts), max(len(ids) for ids in prompts)
    input_ids = torch.full((size, width), pad_id, dtype=torch.long)
    for row, ids in enumerate(prompts):
        input_ids[row, : len(ids)] = torch.tensor(ids)
    mask = torch.zeros((size, 1, width, shared + width), dtype=torch.bool)
    mask[..., :shared] = True
    mask[:, 0, :, shared:] = torch.ones(width, width, dtype=torch.bool).tril()
    positions = (shared + torch.arange(width)).repeat(size, 1)
    return input_ids, mask, positions


def _step_batch(
    searches: list[_RowSearch],
    chosen: list[list[int]],
    lengths: list[int],
    shared: int,
    cached: int,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, K) ids, (B, 1, K, C + K) mask and (B, K) positions of each row's chosen nodes on a cache of C
    columns, recording each node's column. A node attends to the shared prefix, its row's prompt (not the
    padding after it), its expanded ancestors and itself; padding to K attends to the prefix, the prompt
    and itself (its output is unused, and nothing attends to it later)."""
    size, width = len(chosen), max(len(nodes) for nodes in chosen)
    input_ids = torch.full((size, width), pad_id, dtype=torch.long)
    positions = torch.empty((size, width), dtype=torch.long)
    mask = torch.zeros((size, 1, width, cached + width), dtype=torch.bool)
    mask[..., :shared] = True
    mask[:, 0, torch.arange(width), cached + torch.arange(width)] = True
    rows, slots, columns = [], [], []
    for row, (search, nodes) in enumerate(zip(searches, chosen, strict=True)):
        mask[row, 0, :, shared : shared + lengths[row]] = True
        positions[row] = shared + lengths[row]
        for slot, node in enumerate(nodes):
            input_ids[row, slot] = search.tree.trie.tokens[node]
            positions[row, slot] += search.tree.trie.depths[node]
            for ancestor in search.tree.ancestors(node):
                rows.append(row)
                slots.append(slot)
                columns.append(search.columns[ancestor])
            search.columns[node] = cached + slot
    mask[
        torch.tensor(rows, dtype=torch.long),
        0,
        torch.tensor(slots, dtype=torch.long),
        torch.tensor(columns, dtype=torch.long),
    ] = True
    return input_ids, mask, positions
