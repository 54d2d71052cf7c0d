"""Label scoring in one forward per batch equals scoring each (prompt, label) pair on its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.data.records import Example
from tunesmith.eval.baselines import baseline_messages, classification_instruction, select_shots
from tunesmith.eval.classify import label_continuations, score_labels
from tunesmith.models.loading import load_model, load_tokenizer


def test_batched_label_scores_equal_one_forward_per_pair(tiny_model_dir: Path) -> None:
    tokenizer, model = load_tokenizer(str(tiny_model_dir)), load_model(str(tiny_model_dir)).eval()
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        for text in ("do you have oat milk", "when do you open on sundays and holidays", "hi")
    ]
    labels = ["menu", "hours", "greeting and small talk"]
    batched = score_labels(model, tokenizer, prompts, labels, batch_size=2)  # mixed prompt lengths, 2 batches
    continuations = label_continuations(tokenizer, labels)
    assert tokenizer.decode(continuations[0]) == "menu<|im_end|>"  # the end-of-turn token is scored too
    expected = torch.empty(3, 3)
    with torch.no_grad():
        for row, prompt in enumerate(prompts):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            for column, ids in enumerate(continuations):
                logprobs = model(torch.tensor([prompt_ids + ids])).logits[0].log_softmax(-1)
                expected[row, column] = sum(logprobs[len(prompt_ids) - 1 + i, t] for i, t in enumerate(ids))
    assert torch.allclose(batched, expected, atol=1e-4)


def _example(text: str, label: str, index: int) -> Example:
    return Example(
        [{"role": "user", "content": text}, {"role": "assistant", "content": label}],
        f"train.jsonl:{index}",
        label,
    )


def test_few_shot_selection_is_deterministic_and_covers_every_label() -> None:
    pool = [_example(f"text {i}", ["a", "b", "c"][i % 3], i) for i in range(30)]
    shots = select_shots(pool, 4)
    assert shots == select_shots(list(pool), 4)
    assert [shot.label for shot in shots] == ["a", "b", "c", "a"]  # round-robin over sorted labels
    with pytest.raises(ValueError, match="only 30"):
        select_shots(pool, 31)


def test_baseline_prompt_adds_instruction_and_demonstrations_before_the_question() -> None:
    question = Example(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"},
         {"role": "assistant", "content": "b"}], "test.jsonl:1", "b",
    )  # fmt: skip
    messages = baseline_messages(question, [_example("x", "a", 1)], classification_instruction(["a", "b"]))
    assert messages[0] == {
        "role": "system",
        "content": "Be brief.\n\nClassify the user's message. Answer with exactly one of these labels and "
        "nothing else: a, b.",
    }
    assert [m["content"] for m in messages[1:]] == ["x", "a", "hello"]
