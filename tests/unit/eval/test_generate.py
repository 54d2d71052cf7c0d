"""Batched decoding against transformers' own `generate`, one prompt at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunesmith.data.render import render_text
from tunesmith.eval.generate import Decoding, generate_batched
from tunesmith.models.loading import load_model, load_tokenizer

QUESTIONS = ["when do you open", "is there wifi", "any vegan cake?", "do you have oat milk today", "decaf?"]


def _one_at_a_time(model, tokenizer, prompt: str, decoding: Decoding, max_new_tokens: int) -> str:  # type: ignore[no-untyped-def]
    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    generated = model.generate(
        **encoded, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, **decoding.generate_arguments(),
    )  # fmt: skip
    return str(
        tokenizer.decode(generated[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)
    ).strip()


@pytest.mark.parametrize(
    "decoding",
    [
        Decoding(num_beams=4),
        Decoding(num_beams=3, length_penalty=2.0, no_repeat_ngram_size=2, repetition_penalty=1.3),
    ],
    ids=["beams", "beams-penalties"],
)
def test_batched_beam_search_equals_generate_on_each_prompt(
    varied_model_dir: Path, decoding: Decoding
) -> None:
    model, tokenizer = load_model(str(varied_model_dir)), load_tokenizer(str(varied_model_dir))
    prompts = [
        render_text(tokenizer, [{"role": "user", "content": q}], generation_prompt=True) for q in QUESTIONS
    ]
    batched = generate_batched(model, tokenizer, prompts, max_new_tokens=10, batch_size=3, decoding=decoding)
    alone = [_one_at_a_time(model, tokenizer, prompt, decoding, 10) for prompt in prompts]
    assert batched == alone
    greedy = generate_batched(model, tokenizer, prompts, max_new_tokens=10, batch_size=3)
    assert greedy != batched  # the beams found other answers: the test can tell them apart


def test_sampling_is_seeded_and_the_description_names_every_setting() -> None:
    assert Decoding().describe() == "greedy"
    beams = Decoding(num_beams=4, length_penalty=1.5, no_repeat_ngram_size=3, repetition_penalty=1.2)
    assert (
        beams.describe()
        == "beam search (4 beams, length penalty 1.5), no repeated 3-grams, repetition penalty 1.2"
    )
    assert Decoding(do_sample=True, temperature=0.7, top_p=0.9, seed=3).describe() == (
        "sampling (temperature 0.7, top_p 0.9, seed 3)"
    )


def test_sampled_answers_repeat_with_their_seed(varied_model_dir: Path) -> None:
    model, tokenizer = load_model(str(varied_model_dir)), load_tokenizer(str(varied_model_dir))
    prompts = [
        render_text(tokenizer, [{"role": "user", "content": q}], generation_prompt=True) for q in QUESTIONS
    ]

    def sample(seed: int) -> list[str]:
        decoding = Decoding(do_sample=True, temperature=1.5, seed=seed)
        return generate_batched(model, tokenizer, prompts, max_new_tokens=8, batch_size=2, decoding=decoding)

    torch.manual_seed(99)  # whatever the global state before, the seed decides
    first = sample(1)
    assert sample(1) == first != sample(2)
