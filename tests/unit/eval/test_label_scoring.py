"""Label scoring on a prefilled cache with a label trie equals one full forward per (prompt, label) pair."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.data.records import Example
from tunesmith.eval import classify
from tunesmith.eval.classify import label_continuations, label_trie, score_labels, shared_prefix_length
from tunesmith.eval.evaluate import Candidate, activate, candidate_prompts, load_group
from tunesmith.models.loading import load_model, load_tokenizer

# Labels that open alike ("book", "b"), one the opening of others ("book"), one a single character.
LABELS = ["book_flight", "book_hotel", "book", "balance", "bill_balance", "x"]
TEXTS = ["hi", "please book me a flight to paris on friday", "what is my balance", "book", "ok thanks a lot"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    return load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))


def _example(text: str, label: str, index: int) -> Example:
    messages = [{"role": "user", "content": text}, {"role": "assistant", "content": label}]
    return Example(messages, f"data.jsonl:{index}", label)  # type: ignore[arg-type]


@torch.no_grad()
def _reference(
    model: Any, tokenizer: Any, prompts: Sequence[str], continuations: list[list[int]]
) -> torch.Tensor:
    """One full forward over prompt + label for every pair, summing the label tokens' log-probabilities."""
    expected = torch.empty(len(prompts), len(continuations))
    for row, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for column, label_ids in enumerate(continuations):
            logprobs = model(torch.tensor([ids + label_ids])).logits[0].float().log_softmax(-1)
            expected[row, column] = sum(logprobs[len(ids) - 1 + i, t] for i, t in enumerate(label_ids))
    return expected


@pytest.mark.parametrize("shots", [0, 3])
def test_zero_and_few_shot_prompts_score_as_one_forward_per_label(tiny: tuple[Any, Any], shots: int) -> None:
    model, tokenizer = tiny
    train = [_example(f"example {i} " * (i % 3 + 1), LABELS[i % len(LABELS)], i) for i in range(12)]
    test = [_example(text, LABELS[0], i) for i, text in enumerate(TEXTS)]
    prompts = candidate_prompts(tokenizer, Candidate("base", shots=shots), train, LABELS, test)
    ids = [tokenizer(prompt, add_special_tokens=False)["input_ids"] for prompt in prompts]
    shared = shared_prefix_length(ids)
    assert "Classify the user's message" in tokenizer.decode(ids[0][:shared])  # prefilled once, not per row
    assert tokenizer.decode(ids[0][:shared]).count("<|im_start|>assistant") == shots  # the demonstrations too
    continuations = label_continuations(tokenizer, LABELS)
    assert len(label_trie(continuations).tokens) < sum(len(c) for c in continuations)  # openings shared
    scores = score_labels(model, tokenizer, prompts, LABELS, batch_size=2)  # 3 batches, padded rows
    assert torch.allclose(scores, _reference(model, tokenizer, prompts, continuations), atol=1e-4)


def test_trie_shares_openings_and_lets_a_label_end_on_another_labels_path() -> None:
    trie = label_trie([[5, 6], [5, 6, 7], [5, 8], [9], [5, 6]])
    assert trie.tokens == [5, 6, 7, 8, 9] and trie.parents == [-1, 0, 1, 0, -1]
    assert trie.depths == [0, 1, 2, 1, 0]
    assert trie.paths == [[0, 1], [0, 1, 2], [0, 3], [4], [0, 1]]


@pytest.mark.parametrize(
    "continuations",
    [[[30, 31], [30, 31, 32], [30, 40, 41], [50]], [[30], [31], [50]]],
    ids=["label-prefix-of-another", "single-token"],
)
def test_labels_ending_inside_the_trie_and_single_token_labels(
    tiny: tuple[Any, Any], continuations: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, tokenizer = tiny
    monkeypatch.setattr(classify, "label_continuations", lambda tokenizer, labels: continuations)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                             add_generation_prompt=True) for t in TEXTS]  # fmt: skip
    scores = score_labels(model, tokenizer, prompts, ["a"] * len(continuations), batch_size=3)
    assert torch.allclose(scores, _reference(model, tokenizer, prompts, continuations), atol=1e-4)


def test_prompts_of_different_lengths_in_one_batch_and_alone(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        for text in TEXTS
    ]  # nothing shared beyond the template's opening; lengths 1 to 10 words
    expected = _reference(model, tokenizer, prompts, label_continuations(tokenizer, LABELS))
    together = score_labels(model, tokenizer, prompts, LABELS, batch_size=len(prompts))
    assert torch.allclose(together, expected, atol=1e-4)
    alone = score_labels(
        model, tokenizer, prompts[1:2], LABELS, batch_size=1
    )  # all but its last token shared
    assert torch.allclose(alone, expected[1:2], atol=1e-4)
    assert score_labels(model, tokenizer, [], LABELS, batch_size=2).shape == (0, len(LABELS))


def test_an_adapter_scores_as_evaluation_and_serving_load_it(
    tiny: tuple[Any, Any], tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peft import LoraConfig, get_peft_model

    from tunesmith.serve.adapters import AdapterCache

    model, tokenizer = tiny
    torch.manual_seed(0)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False
    )
    get_peft_model(load_model(str(tiny_model_dir)), config).save_pretrained(tmp_path / "adapter")
    monkeypatch.setattr("tunesmith.eval.evaluate.supports_fast_bf16", lambda device: False)  # fp32 here
    candidates = [Candidate("tuned", adapter_dir=tmp_path / "adapter"), Candidate("base")]
    evaluated = load_group(str(tiny_model_dir), candidates)  # peft, as `tunesmith eval` loads adapters
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        for text in TEXTS[:3]
    ]
    continuations = label_continuations(tokenizer, LABELS)
    scores = {}
    for candidate in candidates:
        with activate(evaluated, candidate):
            scores[candidate.name] = score_labels(evaluated, tokenizer, prompts, LABELS, batch_size=2)
            expected = _reference(evaluated, tokenizer, prompts, continuations)
        assert torch.allclose(scores[candidate.name], expected, atol=1e-4)
    assert not torch.allclose(scores["tuned"], scores["base"], atol=1e-2)  # the adapter was applied
    # Serving's guardrail classifier: the adapter in a slot of the stacked layers on the base model.
    cache = AdapterCache(load_model(str(tiny_model_dir)).eval(), str(tiny_model_dir), capacity=1)
    cache.ensure("tuned", tmp_path / "adapter", pinned=set())
    with cache.routed(["tuned"]):
        served = score_labels(cache.model, tokenizer, prompts, LABELS, batch_size=2)
    assert torch.allclose(served, scores["tuned"], atol=1e-4)
    assert torch.allclose(
        score_labels(model, tokenizer, prompts, LABELS, batch_size=2), scores["base"], atol=1e-4
    )
