"""The branch and bound over the label trie finds the same best label and score as scoring every label."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.eval import classify, label_search
from tunesmith.eval.classify import label_trie, score_labels
from tunesmith.eval.label_search import _RowSearch, _Tree, score_best_labels
from tunesmith.models.loading import load_model, load_tokenizer

TEXTS = ["hi", "please book me a flight to paris on friday", "what is my balance", "book", "ok thanks a lot"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    return load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))


def _prompts(tokenizer: Any, texts: list[str]) -> list[str]:
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
        )
        for t in texts
    ]


def _assert_same_best(
    model: Any, tokenizer: Any, prompts: list[str], labels: list[str], batch_size: int
) -> None:
    every = score_labels(model, tokenizer, prompts, labels, batch_size=batch_size)
    best = score_best_labels(model, tokenizer, prompts, labels, batch_size=batch_size)
    assert best.shape == every.shape
    assert best.argmax(dim=1).tolist() == every.argmax(dim=1).tolist()
    assert torch.allclose(best.max(dim=1).values, every.max(dim=1).values, atol=1e-5)
    finite = best.isfinite()
    assert torch.allclose(best[finite], every[finite], atol=1e-5)  # a finite entry is that label's score
    assert (every[~finite] < every.max(dim=1, keepdim=True).values.expand_as(every)[~finite]).all()


def _use_continuations(monkeypatch: pytest.MonkeyPatch, continuations: list[list[int]]) -> list[str]:
    for module in (classify, label_search):
        monkeypatch.setattr(module, "label_continuations", lambda tokenizer, labels: continuations)
    return [f"label {index}" for index in range(len(continuations))]


def test_rendered_labels_with_shared_openings(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    labels = ["book_flight", "book_hotel", "book", "balance", "bill_balance", "x", "bill_due", "bill"]
    _assert_same_best(model, tokenizer, _prompts(tokenizer, TEXTS), labels, batch_size=2)


def test_random_tries_with_labels_ending_inside_others(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = tiny
    generator = random.Random(0)
    # Tokens from a small alphabet: dense sharing, and labels that are openings of other labels.
    continuations = [
        [generator.choice(range(30, 36)) for _ in range(generator.randint(1, 4))] for _ in range(40)
    ]
    assert any(a != b and b[: len(a)] == a for a in continuations for b in continuations)
    labels = _use_continuations(monkeypatch, continuations)
    texts = [" ".join(generator.choice(TEXTS).split()[: generator.randint(1, 6)]) for _ in range(7)]
    _assert_same_best(model, tokenizer, _prompts(tokenizer, texts), labels, batch_size=3)


def test_the_bound_reopens_what_the_greedy_descent_passed_over(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = tiny
    [prompt] = _prompts(tokenizer, ["what is my balance"])
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        first = model(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
        top, runner_up = first.topk(2).indices.tolist()
        after_top = model(torch.tensor([[*ids, top]])).logits[0, -1].log_softmax(-1)
        after_runner_up = model(torch.tensor([[*ids, runner_up]])).logits[0, -1].log_softmax(-1)
    worst, best = int(after_top.argmin()), int(after_runner_up.argmax())
    # The greedy descent takes the likelier first token, whose only label is unlikely after it.
    assert first[top] + after_top[worst] < first[runner_up] + after_runner_up[best]
    labels = _use_continuations(monkeypatch, [[top, worst], [runner_up, best], [runner_up, worst, best]])
    _assert_same_best(model, tokenizer, [prompt], labels, batch_size=1)
    assert score_best_labels(model, tokenizer, [prompt], labels, batch_size=1).argmax().item() == 1


@pytest.mark.parametrize(
    "continuations",
    [[[40, 41, 42]], [[30], [31], [50]], [[30], [30, 31], [30, 31, 32]]],
    ids=["one", "single", "chain"],
)
def test_one_label_single_token_labels_and_a_chain(
    tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch, continuations: list[list[int]]
) -> None:
    model, tokenizer = tiny
    labels = _use_continuations(monkeypatch, continuations)
    _assert_same_best(model, tokenizer, _prompts(tokenizer, TEXTS), labels, batch_size=4)
    assert score_best_labels(model, tokenizer, [], labels, batch_size=2).shape == (0, len(labels))


def test_a_confident_model_expands_few_nodes(
    tiny_model_dir: Path, tiny: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, tokenizer = tiny
    model = load_model(str(tiny_model_dir)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # sharp distributions, as a fine-tune's
    [prompt] = _prompts(tokenizer, ["what is my balance"])
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # the label the model is sure of: its greedy continuation, 4 tokens
        likely = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)[
            0, len(ids) :
        ].tolist()
    others = [
        [*likely[:depth], token, token]
        for depth in range(3)
        for token in range(30, 40)
        if token != likely[depth]
    ]
    labels = _use_continuations(monkeypatch, [*others, likely])
    forwarded: list[int] = []
    model.get_decoder().register_forward_pre_hook(
        lambda module, args, kwargs: forwarded.append(kwargs["input_ids"].numel()), with_kwargs=True
    )
    _assert_same_best(model, tokenizer, [prompt], labels, batch_size=1)
    forwarded.clear()
    assert score_best_labels(model, tokenizer, [prompt], labels, batch_size=1).argmax().item() == len(others)
    # The shared prefix, the prompt's last token, then the sure label's 3 inner nodes, one per step (each
    # has siblings); no other node survives. Scoring every label runs the trie's 33 inner nodes.
    trie = label_trie([*others, likely])
    assert len({parent for parent in trie.parents if parent >= 0}) == 33
    assert forwarded[1:] == [1, 1, 1, 1]


def _run(search: _RowSearch, nodes: list[int], logprob: dict[int, float]) -> None:
    """One step of the search on made-up log-probabilities, as `label_search._expand` runs it."""
    for node in nodes:
        search.columns[node] = 0  # run (the column matters to the mask only)
    for node in nodes:
        search.add(node, [logprob[child] for child in search.tree.children[node]])


def test_the_search_logic_on_random_tries_with_ties_and_near_ties() -> None:
    """The search alone, on made-up log-probabilities: exact ties (log-probabilities of 0) and gaps far
    below a nat, so a bound set even 1e-3 too high, or a pruned node reopened too late, shows."""
    generator = random.Random(1)
    for _ in range(300):
        continuations = [[generator.randint(0, 3) for _ in range(generator.randint(1, 4))] for _ in range(12)]
        tree = _Tree.of(label_trie(continuations))
        logprob = {
            node: 0.0 if generator.random() < 0.3 else -generator.uniform(0, 0.05)
            for node in range(len(tree.trie.tokens))
        }  # of each node's token, given its parent
        search = _RowSearch(tree)
        search.add(-1, [logprob[child] for child in tree.children[-1]])
        while chosen := search.descend():
            _run(search, chosen, logprob)
        _run(search, search.survivors(), logprob)
        assert not search.survivors()  # nothing is left open
        every = [sum(logprob[node] for node in path) for path in tree.trie.paths]
        found = [search.scores.get(path[-1], -math.inf) for path in tree.trie.paths]
        assert max(found) == pytest.approx(max(every), abs=1e-12)
        assert found.index(max(found)) == every.index(max(every))  # the first of tied labels, as argmax
