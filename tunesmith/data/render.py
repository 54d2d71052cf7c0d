"""Chat-template rendering and the assistant-only label mask. No torch.

Owns: turning an `Example` into token ids plus a per-token "learn this" flag, using the base
model's own chat template, so loss falls on every assistant turn including its end-of-turn token.
Does not own: batching or packing (see `pack`).

The mask is found by rendering growing prefixes of the conversation: the text an assistant turn adds
(from after the generation prompt to the end of its turn) is its span. Templates that rewrite earlier
turns when later ones are added (so a prefix is not a prefix) are refused with a clear error.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tunesmith.data.records import Example, Message

IGNORE_INDEX = -100


@dataclass(frozen=True)
class RenderedExample:
    input_ids: list[int]
    targets: list[int]  # targets[t] = the token to predict after input_ids[t], or IGNORE_INDEX
    source: str

    @property
    def num_loss_tokens(self) -> int:
        return sum(1 for target in self.targets if target != IGNORE_INDEX)


class TemplateError(ValueError):
    """The chat template cannot render this conversation with a stable prefix."""


def render_text(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], *, generation_prompt: bool
) -> str:
    """The conversation as the model sees it, as text."""
    turns = [{"role": message["role"], "content": message["content"]} for message in messages]
    text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)
    assert isinstance(text, str)
    return text


def assistant_spans(
    tokenizer: PreTrainedTokenizerBase, example: Example
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans of every assistant turn (content + end-of-turn)."""
    messages = example.messages
    full = render_text(tokenizer, messages, generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_text(tokenizer, messages[:index], generation_prompt=True)
        through = render_text(tokenizer, messages[: index + 1], generation_prompt=False).rstrip()
        if not (full.startswith(before) and full.startswith(through) and through.startswith(before)):
            raise TemplateError(
                f"{example.source}: the chat template does not render turn {index} as a prefix of the conversation"
            )
        spans.append((len(before), len(through)))
    return full, spans


def render_example(tokenizer: PreTrainedTokenizerBase, example: Example, max_len: int) -> RenderedExample:
    """Token ids and next-token targets, with targets only inside assistant spans; truncated to `max_len`."""
    text, spans = assistant_spans(tokenizer, example)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids: list[int] = encoding["input_ids"][:max_len]
    offsets: list[tuple[int, int]] = encoding["offset_mapping"][: len(input_ids)]
    learn = [any(start <= begin < end for start, end in spans) for begin, _ in offsets]
    targets = [
        input_ids[t + 1] if t + 1 < len(input_ids) and learn[t + 1] else IGNORE_INDEX
        for t in range(len(input_ids))
    ]
    return RenderedExample(input_ids=input_ids, targets=targets, source=example.source)


def render_prompt(tokenizer: PreTrainedTokenizerBase, example: Example) -> str:
    """The evaluation prompt: every turn before the final answer, then the generation prompt."""
    return render_text(tokenizer, example.prompt_messages(), generation_prompt=True)
