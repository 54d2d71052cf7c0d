"""The vLLM engine's parts that run without vLLM: the refusal where vLLM or CUDA is missing, and the pure
pieces between tunesmith's jobs and vLLM's API (sampling settings, deltas from cumulative text, adapter
ids, token counts, label scores from prompt log-probabilities). The engine itself runs in
tests/integration/test_serve.py's `vllm` cases, on a GPU with vLLM installed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tunesmith.config import ServeSpec
from tunesmith.eval.classify import score_labels
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.serve.inference import VllmUnavailableError, require_vllm
from tunesmith.serve.jobs import GenerationJob
from tunesmith.serve.vllm_engine import (
    AdapterIds,
    DeltaStream,
    completion_tokens,
    label_logprob,
    label_prompts,
    sampling_kwargs,
)

HAS_VLLM = importlib.util.find_spec("vllm") is not None
VLLM_READY = HAS_VLLM and torch.cuda.is_available()


@pytest.mark.skipif(VLLM_READY, reason="vLLM and a GPU are here: --engine vllm would start")
def test_serve_engine_vllm_without_vllm_or_gpu_exits_2_naming_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tunesmith", "serve", "--engine", "vllm", "--no-auth", "--port", "0"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    expected = "needs a CUDA GPU" if HAS_VLLM else "pip install 'tunesmith[vllm]'"
    assert expected in " ".join(result.stderr.split())  # rich wraps long lines


@pytest.mark.skipif(VLLM_READY, reason="vLLM and a GPU are here")
def test_require_vllm_is_a_user_error() -> None:
    with pytest.raises(VllmUnavailableError, match="embedded engine"):
        require_vllm()


def _job(**settings: object) -> GenerationJob:
    defaults = {"max_tokens": 12, "temperature": 0.0, "top_p": 1.0, "seed": None, "stop": []}
    return GenerationJob(prompt_ids=[1, 2], adapter=None, adapter_path=None, sink=lambda event: None,
                         **(defaults | settings))  # type: ignore[arg-type]  # fmt: skip


def test_sampling_kwargs_carry_the_jobs_limit_sampling_seed_and_stops() -> None:
    job = _job(max_tokens=7, temperature=0.8, top_p=0.9, seed=11, stop=["\n\n", "END"])
    kwargs = sampling_kwargs(job)
    assert kwargs == {"n": 1, "max_tokens": 7, "temperature": 0.8, "top_p": 0.9, "seed": 11,
                      "stop": ["\n\n", "END"], "skip_special_tokens": True}  # fmt: skip
    assert kwargs["stop"] is not job.stop  # vLLM may keep the list; the job's stays the job's
    if HAS_VLLM:  # the names are vLLM's own
        from vllm import SamplingParams

        SamplingParams(**kwargs)


def test_deltas_from_cumulative_text_hold_back_partial_characters_and_stop_strings() -> None:
    stream = DeltaStream(stop=["world"])
    cumulative = ["He", "Hello", "Hello \ufffd", "Hello é w", "Hello é wor", "Hello é worm"]
    deltas = [stream.delta(text, finished=False) for text in cumulative]
    assert deltas == ["He", "llo", " ", "é ", "", "wor" + "m"]
    assert stream.delta("Hello é worm!", finished=True) == "!"
    assert "".join(deltas) + "!" == "Hello é worm!"
    held = DeltaStream(stop=["wor"])
    assert held.delta("a w", finished=False) == "a " and held.delta("a w", finished=True) == "w"
    assert held.delta("a w", finished=True) == ""  # nothing is sent twice


def test_adapter_ids_are_stable_distinct_and_positive() -> None:
    ids = AdapterIds()
    first, second = ids.id_for("voice@1"), ids.id_for("voice@2")
    assert (first, second) == (1, 2)
    assert ids.id_for("voice@1") == first and ids.id_for("secret@1") == 3


def test_completion_tokens_leave_out_a_final_end_of_sequence() -> None:
    assert completion_tokens([5, 6, 2], eos={2}) == 2
    assert completion_tokens([5, 2, 6], eos={2}) == 3  # only a final one ends the answer
    assert completion_tokens([], eos={2}) == 0


def test_label_scores_from_prompt_logprobs_equal_the_embedded_scoring(tiny_model_dir: Path) -> None:
    """What vLLM returns as prompt log-probabilities (each position's own token), summed over a label,
    equals `eval.classify.score_labels` on the same model: the classifier guardrail scores alike."""
    model, tokenizer = load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir))
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Classify this\n\nmy card was charged twice"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    labels = ["billing", "refund", "other"]
    prompt_ids, continuations = label_prompts(tokenizer, prompt, labels)
    scores = []
    for label_ids in continuations:
        ids = prompt_ids + label_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()  # (T, V)
        logprobs = logits.log_softmax(-1)
        # vLLM's prompt_logprobs: None at position 0, else {token at i: log p(token | tokens before i)}
        returned = [None] + [{ids[i]: float(logprobs[i - 1, ids[i]])} for i in range(1, len(ids))]
        scores.append(label_logprob(returned, label_ids, len(prompt_ids)))
    expected = score_labels(model, tokenizer, [prompt], labels, batch_size=1)[0]
    assert torch.allclose(torch.tensor(scores, dtype=torch.float64), expected.double(), atol=1e-4), (
        scores,
        expected,
    )


def test_max_lora_rank_is_one_of_vllms_sizes() -> None:
    assert ServeSpec(engine="vllm", max_lora_rank=128).max_lora_rank == 128
    with pytest.raises(ValueError, match="max_lora_rank: 12 is not one of vLLM's sizes"):
        ServeSpec(max_lora_rank=12)
