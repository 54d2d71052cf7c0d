"""Parity checks that an export behaves like the adapter it came from. Pure comparisons, no writing.

Owns: the prompts and multi-turn chats the checks use, the checks themselves (logits, greedy tokens,
chat templates, BOS/EOS) raising `ParityError` with the first differing example. Does not own:
producing the exports (`merged`, `gguf`, `ollama`) or where results are written (`core`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.export.errors import ParityError

Chat = list[dict[str, str]]
Model = PreTrainedModel | PeftModel
DEMO_DATA = Path(__file__).resolve().parents[1] / "data" / "demo"


def demo_chats() -> list[Chat]:
    """The demo data's conversations (train, validation, test), the default source of check prompts."""
    chats = []
    for split in ("val", "test", "train"):
        for line in (DEMO_DATA / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            chats.append(list(json.loads(line)["messages"]))
    return chats


def run_chats(adapter_dir: Path) -> tuple[list[Chat], str] | None:
    """The chats of the data the adapter's run validated on (else trained on), and where they came from.

    Checks on the adapter's own kind of prompt say more than the demo data's: None when the adapter is
    not in a run folder, or its data is gone, not chat examples (preference pairs), or unreadable.
    """
    import yaml

    from tunesmith.data.ingest import is_prepared_dataset, load_examples
    from tunesmith.data.records import DataError

    config_file = adapter_dir.parent / "config.yaml"
    if not config_file.is_file():
        return None
    train = (yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}).get("train") or {}
    for key in ("val_data", "data"):
        if not train.get(key):
            continue
        path = Path(train[key])
        if path.is_dir() and is_prepared_dataset(path):
            path = path / ("val.jsonl" if (path / "val.jsonl").is_file() else "train.jsonl")
        try:
            examples = load_examples(path, train.get("format"))
        except (DataError, OSError, ValueError):
            continue
        if examples:
            chats = [[{"role": m["role"], "content": m["content"]} for m in e.messages] for e in examples]
            return chats, str(path)
    return None


def prompt_chats(chats: Sequence[Chat], count: int) -> list[Chat]:
    """`count` prompts: each chat without its final assistant answer, cycling through `chats`."""
    prompts = [chat[:-1] if chat[-1]["role"] == "assistant" else chat for chat in chats]
    return [prompts[index % len(prompts)] for index in range(count)]


def multi_turn_chats(chats: Sequence[Chat], count: int) -> list[Chat]:
    """`count` multi-turn chats built by appending the user/assistant turns of the following chats."""
    result = []
    for index in range(count):
        chat = list(chats[index % len(chats)])
        for extra in range(1, 1 + index % 3):
            chat += [m for m in chats[(index + extra) % len(chats)] if m["role"] != "system"]
        if index % 2:  # half without a system message: templates with a default system prompt show it
            chat = [m for m in chat if m["role"] != "system"]
        result.append(chat)
    return result


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Chat]) -> list[list[int]]:
    """Token ids of each prompt rendered with the chat template and the generation prompt."""
    texts = [
        str(tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True))
        for chat in prompts
    ]
    return [list(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in texts]


@torch.no_grad()
def last_logits(model: Model, prompts: Sequence[list[int]]) -> list[torch.Tensor]:
    """Each prompt's logits over its positions (T, V) in fp32, one prompt at a time (no padding effects)."""
    return [model(torch.tensor([ids])).logits[0].float() for ids in prompts]


def check_logits(
    reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor], tolerance: float
) -> dict[str, Any]:
    """Max absolute logit difference over all prompts; ParityError names the first prompt over `tolerance`."""
    worst = 0.0
    for index, (expected, actual) in enumerate(zip(reference, candidate, strict=True)):
        difference = float((expected - actual).abs().max())
        if difference > tolerance:
            raise ParityError(
                f"merged logits differ from the adapter's by {difference:.3g} (> {tolerance:g}) "
                f"on prompt {index}"
            )
        worst = max(worst, difference)
    return {"prompts": len(reference), "max_logit_difference": worst, "tolerance": tolerance}


@torch.no_grad()
def greedy_continuations(
    model: Model, prompts: Sequence[list[int]], new_tokens: int, eos_token_id: int
) -> list[list[int]]:
    """The greedy continuation of each prompt (stops at EOS), one prompt at a time."""
    continuations = []
    for ids in prompts:
        output = model.generate(  # type: ignore[operator]
            torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False, eos_token_id=eos_token_id,
            pad_token_id=eos_token_id,
        )  # fmt: skip
        continuations.append(output[0, len(ids) :].tolist())
    return continuations


@torch.no_grad()
def check_greedy_tokens(
    candidate: Model,
    prompts: Sequence[list[int]],
    continuations: Sequence[list[int]],
    minimum_agreement: float,
    decode: Any,
) -> dict[str, Any]:
    """Share of the reference's greedy positions where `candidate`'s argmax agrees (teacher-forced).

    Teacher forcing scores every position against the same prefix, so one early flip between near-tied
    tokens counts once, not for the rest of the answer.
    """
    agreed = total = 0
    first_difference: str | None = None
    for index, (ids, continuation) in enumerate(zip(prompts, continuations, strict=True)):
        if not continuation:
            continue
        logits = candidate(torch.tensor([ids + continuation])).logits[0]
        predicted = logits[len(ids) - 1 : -1].argmax(-1).tolist()
        matches = [int(a == b) for a, b in zip(predicted, continuation, strict=True)]
        agreed, total = agreed + sum(matches), total + len(matches)
        if first_difference is None and not all(matches):
            position = matches.index(0)
            first_difference = (
                f"prompt {index}, token {position}: expected {decode([continuation[position]])!r}, "
                f"got {decode([predicted[position]])!r}"
            )
    agreement = agreed / total if total else 1.0
    if agreement < minimum_agreement:
        raise ParityError(
            f"greedy tokens agree on {agreement:.1%} of {total} positions (< {minimum_agreement:.0%}); "
            f"first difference: {first_difference}"
        )
    return {
        "prompts": len(prompts),
        "positions": total,
        "agreement": agreement,
        "minimum": minimum_agreement,
        "first_difference": first_difference,
    }


def check_rendering(
    tokenizer: PreTrainedTokenizerBase, cases: Sequence[tuple[Chat, bool]], render: Any, where: str
) -> dict[str, Any]:
    """`render(chat, add_generation_prompt)` must equal `apply_chat_template`'s text, byte for byte."""
    for index, (chat, generation_prompt) in enumerate(cases):
        expected = tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=generation_prompt
        )
        actual = render(chat, generation_prompt)
        if actual != expected:
            raise ParityError(
                f"{where}: case {index} (add_generation_prompt={generation_prompt}) renders differently: "
                f"{_first_difference(str(expected), str(actual))}"
            )
    return {"cases": len(cases), "identical": True}


def check_special_tokens(tokenizer: PreTrainedTokenizerBase, chats: Sequence[Chat], add_bos: bool) -> None:
    """The rendered chat, tokenized as llama.cpp/Ollama will (BOS added iff `add_bos`), has one BOS at most."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    for index, chat in enumerate(chats):
        text = str(tokenizer.apply_chat_template(chat, tokenize=False))
        ids = ([bos] if add_bos else []) + tokenizer(text, add_special_tokens=False)["input_ids"]
        if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
            raise ParityError(f"chat {index}: the exported template and add_bos_token give a doubled BOS")
        if eos is not None and len(ids) > 1 and ids[-1] == eos and ids[-2] == eos:
            raise ParityError(f"chat {index}: the rendered chat ends with a doubled EOS")


def _first_difference(expected: str, actual: str) -> str:
    position = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    return f"at character {position}: expected {expected[position : position + 40]!r}, got {actual[position : position + 40]!r}"
