"""Label scoring equals scoring each (prompt, label) pair on its own; few-shot selection and prompts; calibration."""

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


def test_out_of_scope_threshold_maximises_mean_of_in_scope_accuracy_and_out_of_scope_recall() -> None:
    from tunesmith.eval.classify import calibrate_out_of_scope, predict_labels

    # Two scored labels (0, 1); out of scope is index 2. Best scores: in scope and right -1, -2, -3;
    # in scope but wrong -1.5; out of scope -2.5, -4, -0.5.
    best = [-1.0, -2.0, -3.0, -1.5, -2.5, -4.0, -0.5]
    predicted = [0, 1, 0, 0, 1, 0, 1]
    gold = [0, 1, 0, 1, 2, 2, 2]
    scores = torch.full((7, 2), -50.0)
    scores[range(7), predicted] = torch.tensor(best)
    threshold = calibrate_out_of_scope(scores, gold, out_of_scope=2)
    # A prediction is out of scope below the cut. Below -4: in scope 3/4 right, 0/3 caught (mean 3/8);
    # between -4 and -3: 3/4, 1/3 (13/24); between -3 and -2.5: 2/4, 1/3; between -2.5 and -2: 2/4, 2/3
    # (7/12, the best); higher cuts lose more in scope than they catch. Brute force agrees:

    def objective(cut: float) -> float:
        outcome = predict_labels(scores, cut, out_of_scope=2)
        in_scope = [o == g for o, g in zip(outcome, gold, strict=True) if g != 2]
        caught = [o == 2 for o, g in zip(outcome, gold, strict=True) if g == 2]
        return (sum(in_scope) / len(in_scope) + sum(caught) / len(caught)) / 2

    cuts = [value + 0.25 for value in [-4.5, *sorted(best)]]
    assert objective(threshold) == pytest.approx(max(objective(cut) for cut in cuts)) == pytest.approx(7 / 12)
    assert threshold == pytest.approx(-2.25)  # halfway between -2.5 and -2
    assert predict_labels(scores, threshold, out_of_scope=2) == [0, 1, 2, 0, 2, 2, 1]
    assert predict_labels(scores) == predicted
    with pytest.raises(ValueError, match="both in and out of scope"):
        calibrate_out_of_scope(scores[:4], gold[:4], out_of_scope=2)
    # The paper's rule: accuracy over all seven with out of scope as a third label. Below -4: 3/7 right;
    # between -4 and -3: 3 + 1 caught = 4/7; between -2.5 and -2: 2 + 2 = 4/7 too; the lower cut is taken.
    assert calibrate_out_of_scope(scores, gold, out_of_scope=2, objective="accuracy") == pytest.approx(-3.5)
