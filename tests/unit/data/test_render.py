from __future__ import annotations

from pathlib import Path

import pytest

from tunesmith.data.records import Example
from tunesmith.data.render import IGNORE_INDEX, TemplateError, render_example, render_prompt
from tunesmith.models.loading import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return load_tokenizer(str(tiny_model_dir))


def _learned_text(tokenizer, rendered) -> str:
    """Concatenated text of the tokens that carry loss (token t+1 where targets[t] is set)."""
    ids = [rendered.input_ids[t + 1] for t, target in enumerate(rendered.targets) if target != IGNORE_INDEX]
    assert ids == [target for target in rendered.targets if target != IGNORE_INDEX]
    return tokenizer.decode(ids)


def test_loss_covers_every_assistant_turn_and_its_end_of_turn_only(tokenizer) -> None:
    example = Example(
        messages=[
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "second question"},
            {"role": "assistant", "content": "second answer"},
        ],
        source="t:1",
    )
    rendered = render_example(tokenizer, example, max_len=512)
    assert _learned_text(tokenizer, rendered) == "first answer<|im_end|>second answer<|im_end|>"
    assert len(rendered.targets) == len(rendered.input_ids)
    assert rendered.targets[-1] == IGNORE_INDEX


def test_truncation_keeps_length_and_drops_targets_beyond(tokenizer) -> None:
    example = Example(
        messages=[
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "a long answer " * 20},
        ],
        source="t:1",
    )
    rendered = render_example(tokenizer, example, max_len=16)
    assert len(rendered.input_ids) == 16
    assert rendered.targets[-1] == IGNORE_INDEX


def test_prompt_ends_with_the_generation_prompt(tokenizer) -> None:
    example = Example(
        messages=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}], source="t:1"
    )
    assert render_prompt(tokenizer, example) == "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"


def test_templates_that_rewrite_history_are_refused(tokenizer) -> None:
    tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    # Renders only the last message: earlier turns vanish when a turn is added.
    tokenizer.chat_template = (
        "{{ '<|im_start|>' + messages[-1]['role'] + '\n' + messages[-1]['content'] + '<|im_end|>' }}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    example = Example(
        messages=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}], source="t:7"
    )
    with pytest.raises(TemplateError, match="t:7"):
        render_example(tokenizer, example, max_len=64)
