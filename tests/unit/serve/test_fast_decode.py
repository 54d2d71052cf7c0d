"""The engine's decode path (growing KV cache, prefill groups, prefix cache, chunked prefill) against a
plain greedy loop over transformers' `DynamicCache`, the path it replaced: token for token in fp32."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from transformers import DynamicCache

from tunesmith.config import ServeSpec
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.registry.store import Registry
from tunesmith.serve import app as serve_app
from tunesmith.serve.adapters import AdapterCache
from tunesmith.serve.engine import GenerationEngine
from tunesmith.serve.jobs import GenerationJob, JobEvent
from tunesmith.serve.metrics import ServeMetrics

OPENING = "you are a helpful barista at a small cafe. answer in one short sentence. question: "
QUESTIONS = ["hello there", "what are your opening hours on sunday", "oat milk?", "do you have wifi"]
NEW_TOKENS = 10


class Sink:
    def __init__(self) -> None:
        self.text = ""
        self.tokens = 0
        self.done = threading.Event()

    def __call__(self, event: JobEvent) -> None:
        if event.kind == "delta":
            self.text += event.text
            self.tokens += 1
        else:
            assert event.error is None, event.error
            self.done.set()


def _engine(model_dir: Path, **options: int) -> GenerationEngine:
    cache = AdapterCache(load_model(str(model_dir)).eval(), str(model_dir), capacity=4)
    tokenizer = load_tokenizer(str(model_dir))
    engine = GenerationEngine(
        cache, tokenizer, max_batch_size=8, max_wait_s=0.2, metrics=ServeMetrics(), **options
    )
    engine.start()
    return engine


@pytest.fixture()
def engines(tiny_model_dir: Path) -> Iterator[dict[str, GenerationEngine]]:
    built = {
        "default": _engine(tiny_model_dir),
        "no_prefix_cache": _engine(tiny_model_dir, prefix_cache_tokens=0),
        "chunked": _engine(tiny_model_dir, prefill_chunk=3, prefix_cache_tokens=0),
    }
    yield built
    for engine in built.values():
        engine.close(timeout=30)


def _job(
    engine: GenerationEngine, adapter: tuple[str, Path] | None, prompt: str, sink: Callable[[JobEvent], None]
) -> GenerationJob:
    """A greedy job for `prompt` on `adapter` (name, folder; None: the base)."""
    return GenerationJob(
        prompt_ids=engine.tokenizer(prompt)["input_ids"],
        adapter=adapter[0] if adapter else None,
        adapter_path=adapter[1] if adapter else None,
        max_tokens=NEW_TOKENS,
        temperature=0.0,
        top_p=1.0,
        seed=None,
        stop=[],
        sink=sink,
    )


def _generate(engine: GenerationEngine, requests: list[tuple[tuple[str, Path] | None, str]]) -> list[str]:
    """The completions of `requests` (adapter, prompt) submitted together, greedy."""
    sinks = [Sink() for _ in requests]
    engine.submit_all([_job(engine, *request, sink) for request, sink in zip(requests, sinks, strict=True)])
    assert all(sink.done.wait(60) for sink in sinks)
    return [sink.text for sink in sinks]


@torch.inference_mode()
def _reference(engine: GenerationEngine, adapter: tuple[str, Path] | None, prompt: str) -> str:
    """Greedy decoding one prompt at a time through a `DynamicCache` (concatenated every step)."""
    adapters, tokenizer = engine.adapters, engine.tokenizer
    if adapter is not None:
        engine.call(lambda: adapters.ensure(adapter[0], adapter[1], set())).result(30)
    ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    cache, tokens = DynamicCache(), []
    with adapters.routed([adapter[0] if adapter else None]):
        for _ in range(NEW_TOKENS):
            logits = adapters.model(input_ids=ids, cache=cache, use_cache=True).logits
            token = int(logits[0, -1].argmax())
            if token in engine.eos:
                break
            tokens.append(token)
            ids = torch.tensor([[token]])
    return str(tokenizer.decode(tokens, skip_special_tokens=True))


def test_greedy_batches_equal_the_concatenating_path(
    engines: dict[str, GenerationEngine], adapter_dirs: list[Path]
) -> None:
    engine = engines["no_prefix_cache"]
    adapters = [None, ("a@1", adapter_dirs[0]), ("b@1", adapter_dirs[1]), None]
    requests = list(zip(adapters, QUESTIONS, strict=True))
    expected = [_reference(engine, adapter, prompt) for adapter, prompt in requests]
    assert len(set(expected)) > 1
    assert _generate(engine, requests[:1]) == expected[:1]  # one stream
    assert _generate(engine, [(None, p) for p in QUESTIONS[::3]]) == expected[::3]  # a batch, lengths differ
    assert _generate(engine, [requests[1], (adapters[1], QUESTIONS[2])]) == [  # one adapter
        expected[1],
        _reference(engine, adapters[1], QUESTIONS[2]),
    ]
    assert _generate(engine, requests) == expected  # mixed adapters and the base


def test_prefix_cache_and_chunked_prefill_give_the_same_tokens(
    engines: dict[str, GenerationEngine], adapter_dirs: list[Path]
) -> None:
    adapter = ("a@1", adapter_dirs[0])
    requests = [(None if i % 2 else adapter, OPENING + q) for i, q in enumerate(QUESTIONS)]
    expected = [_reference(engines["no_prefix_cache"], a, p) for a, p in requests]
    cached = engines["default"]
    assert _generate(cached, requests[:2]) == expected[:2]  # fills the prefix cache
    assert cached.prefixes is not None and cached.prefixes.hits == 0
    assert _generate(cached, requests[2:]) == expected[2:]  # their shared opening found, per adapter
    assert cached.prefixes.hits >= 2 * 16
    assert _generate(cached, requests) == expected  # every prompt found again, batched
    assert _generate(engines["chunked"], requests) == expected  # 3 prompt columns at a time


def test_prompts_joining_mid_decode_give_the_same_tokens(
    engines: dict[str, GenerationEngine], adapter_dirs: list[Path]
) -> None:
    """Prompts that arrive while a stream decodes are computed 3 columns at a time with a decode step of
    the running stream between two chunks, then join its batch: every stream's tokens stay the same."""
    engine, adapter = engines["chunked"], ("a@1", adapter_dirs[0])
    requests = [(adapter, OPENING + question) for question in QUESTIONS]
    expected = [_reference(engine, *request) for request in requests]
    first, later = Sink(), [Sink() for _ in requests[1:]]
    decoded_before_joining: list[int] = []

    def on_joined(event: JobEvent) -> None:
        if later[0].tokens == 0:
            decoded_before_joining.append(first.tokens)
        later[0](event)

    def on_first(event: JobEvent) -> None:  # its first token out: the others arrive while it decodes
        if first.tokens == 0:
            sinks = [on_joined, *later[1:]]
            engine.submit_all(
                [_job(engine, *request, sink) for request, sink in zip(requests[1:], sinks, strict=True)]
            )
        first(event)

    engine.submit(_job(engine, *requests[0], on_first))
    assert first.done.wait(60) and all(sink.done.wait(60) for sink in later)
    assert [first.text, *(sink.text for sink in later)] == expected
    assert decoded_before_joining[0] >= 3  # the running stream went on between the newcomers' chunks


def test_the_server_stays_fp32_on_a_cpu_that_runs_bf16(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bf16 made a lone stream 15% slower and 8 mixed adapters 0.65x on such a CPU: not the default."""
    monkeypatch.setattr(serve_app, "supports_fast_bf16", lambda device: True)
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}").connect()
    app = serve_app.create_app(ServeSpec(model=str(tiny_model_dir), auth=False), registry)
    engine: GenerationEngine = app.state.service.engine
    assert next(engine.adapters.model.parameters()).dtype == torch.float32
