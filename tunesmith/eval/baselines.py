"""Baseline prompts: the base model zero-shot and few-shot, the "exhaust prompt engineering first" check.

Owns: choosing the k demonstrations (deterministic: a seeded shuffle of the training pool; for
classification, round-robin over the labels so k >= the number of labels shows every label), the
classification instruction that tells a base model the label set, and building the baseline's
messages (instruction, then demonstrations as earlier user/assistant turns, then the test prompt).
Does not own: scoring.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tunesmith.data.records import Example, Message

SHOTS_SEED = 0


def select_shots(pool: Sequence[Example], k: int, seed: int = SHOTS_SEED) -> list[Example]:
    """k demonstrations from `pool`, the same ones on every call with the same pool."""
    if k > len(pool):
        raise ValueError(f"{k} few-shot examples asked for, but the training data holds only {len(pool)}")
    shuffled = list(pool)
    random.Random(seed).shuffle(shuffled)
    if any(example.label is None for example in shuffled):
        return shuffled[:k]
    by_label: dict[str, list[Example]] = {}
    for example in shuffled:
        assert example.label is not None
        by_label.setdefault(example.label, []).append(example)
    chosen: list[Example] = []
    depth = 0
    while len(chosen) < k:
        for label in sorted(by_label):
            if depth < len(by_label[label]) and len(chosen) < k:
                chosen.append(by_label[label][depth])
        depth += 1
    return chosen


def classification_instruction(labels: Sequence[str]) -> str:
    """What a base model needs to be told to answer with a label."""
    return (
        "Classify the user's message. Answer with exactly one of these labels and nothing else: "
        + ", ".join(labels)
        + "."
    )


def baseline_messages(example: Example, shots: Sequence[Example], instruction: str | None) -> list[Message]:
    """The test prompt preceded by the instruction (as system text) and the demonstrations."""
    prompt = example.prompt_messages()
    system: list[Message] = []
    if prompt and prompt[0]["role"] == "system":
        system, prompt = [prompt[0]], prompt[1:]
    if instruction is not None:
        text = f"{system[0]['content']}\n\n{instruction}" if system else instruction
        system = [{"role": "system", "content": text}]
    demonstrations: list[Message] = []
    for shot in shots:
        demonstrations.extend(message for message in shot.messages if message["role"] != "system")
    return [*system, *demonstrations, *prompt]
