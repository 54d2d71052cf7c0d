from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.serve.adapters import AdapterCache
from tunesmith.serve.engine import GenerationEngine
from tunesmith.serve.jobs import GenerationJob, JobEvent
from tunesmith.serve.metrics import ServeMetrics


class Collector:
    """A job sink that gathers deltas and signals when the job is done."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.text = ""
        self.deltas = 0
        self.done = threading.Event()
        self.finish_reason: str | None = None
        self.tokens = 0
        self.cancel_after = cancel_after
        self.job: GenerationJob | None = None
        self.error: Exception | None = None

    def __call__(self, event: JobEvent) -> None:
        if event.kind == "delta":
            self.text += event.text
            self.deltas += 1
            if self.cancel_after is not None and self.deltas >= self.cancel_after and self.job is not None:
                self.job.cancelled = True
        else:
            self.finish_reason, self.tokens = event.finish_reason, event.completion_tokens
            self.error = event.error
            self.done.set()


@pytest.fixture()
def engine(tiny_model_dir: Path, adapter_dirs: list[Path]):  # type: ignore[no-untyped-def]
    cache = AdapterCache(load_model(str(tiny_model_dir)).eval(), str(tiny_model_dir), capacity=4)
    engine = GenerationEngine(
        cache, load_tokenizer(str(tiny_model_dir)), max_batch_size=8, max_wait_s=0.3, metrics=ServeMetrics()
    )
    engine.start()
    yield engine
    engine.close(timeout=30)


def _job(engine: GenerationEngine, adapter: tuple[str, Path] | None, prompt: str, sink: Collector,
         **overrides: object) -> GenerationJob:  # fmt: skip
    ids = engine.tokenizer(prompt)["input_ids"]
    settings = {"max_tokens": 12, "temperature": 0.0, "top_p": 1.0, "seed": None, "stop": []} | overrides
    job = GenerationJob(prompt_ids=ids, adapter=adapter[0] if adapter else None,
                        adapter_path=adapter[1] if adapter else None, sink=sink, **settings)  # type: ignore[arg-type]  # fmt: skip
    sink.job = job
    return job


def _run(engine: GenerationEngine, jobs: list[GenerationJob]) -> None:
    for job in jobs:
        engine.submit(job)
    for job in jobs:
        assert isinstance(job.sink, Collector) and job.sink.done.wait(30)
    deadline = time.monotonic() + 10
    while engine.running and time.monotonic() < deadline:  # the batch's metrics land right after its last row
        time.sleep(0.01)


def test_mixed_adapter_batch_matches_each_request_alone(
    engine: GenerationEngine, adapter_dirs: list[Path]
) -> None:
    adapters = [None, ("a@1", adapter_dirs[0]), ("b@1", adapter_dirs[1])]
    prompts = ["hello there", "what are your opening hours on sunday", "oat milk?"]
    alone = []
    for adapter, prompt in zip(adapters, prompts, strict=True):
        sink = Collector()
        _run(engine, [_job(engine, adapter, prompt, sink)])
        alone.append(sink.text)
    registry = engine.metrics.registry

    def wide_steps() -> float:  # decode steps with more than 2 rows
        count = registry.get_sample_value("tunesmith_batch_size_count") or 0.0
        return count - (registry.get_sample_value("tunesmith_batch_size_bucket", {"le": "2.0"}) or 0.0)

    assert wide_steps() == 0
    sinks = [Collector() for _ in adapters]
    _run(engine, [_job(engine, a, p, s) for a, p, s in zip(adapters, prompts, sinks, strict=True)])
    assert [sink.text for sink in sinks] == alone
    assert wide_steps() > 0  # the three were decoded together
    same_prompt = [Collector() for _ in adapters]
    _run(engine, [_job(engine, a, "hello", s) for a, s in zip(adapters, same_prompt, strict=True)])
    assert len({sink.text for sink in same_prompt}) == 3  # base and the two adapters each answer differently


def test_stop_strings_cut_the_text_and_seeds_repeat(engine: GenerationEngine) -> None:
    free = Collector()
    _run(engine, [_job(engine, None, "hello", free, max_tokens=16, temperature=1.0, seed=3)])
    again = Collector()
    _run(engine, [_job(engine, None, "hello", again, max_tokens=16, temperature=1.0, seed=3)])
    assert again.text == free.text and free.finish_reason == "length" and free.tokens == 16
    stop = free.text[len(free.text) // 2 : len(free.text) // 2 + 2]
    stopped = Collector()
    _run(engine, [_job(engine, None, "hello", stopped, max_tokens=16, temperature=1.0, seed=3, stop=[stop])])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.index(stop)]


def test_a_cancelled_row_leaves_the_batch_and_the_rest_finish(engine: GenerationEngine) -> None:
    quitter, stayer = Collector(cancel_after=2), Collector()
    _run(
        engine,
        [
            _job(engine, None, "hello", quitter, max_tokens=60),
            _job(engine, None, "hi", stayer, max_tokens=60),
        ],
    )
    assert quitter.finish_reason == "cancelled" and quitter.tokens <= 3
    assert stayer.finish_reason in {"length", "stop"} and stayer.tokens > 3
    assert engine.running == 0


def test_close_finishes_queued_jobs_and_refuses_new_ones(engine: GenerationEngine) -> None:
    sinks = [Collector() for _ in range(5)]
    for sink in sinks:
        engine.submit(_job(engine, None, "hello", sink))
    engine.close(timeout=30)
    assert all(sink.done.is_set() and sink.finish_reason == "length" for sink in sinks)
    with pytest.raises(RuntimeError, match="shutting down"):
        engine.submit(_job(engine, None, "hello", Collector()))


def test_queued_jobs_join_a_running_batch_and_match_their_solo_output(
    engine: GenerationEngine, adapter_dirs: list[Path]
) -> None:
    late_adapter = ("b@1", adapter_dirs[1])
    solo = Collector()
    _run(engine, [_job(engine, late_adapter, "what are your opening hours on sunday", solo, max_tokens=8)])
    long = Collector()
    engine.submit(_job(engine, ("a@1", adapter_dirs[0]), "hi", long, max_tokens=300, temperature=0.0))
    while long.deltas < 3:  # the long job is decoding ...
        time.sleep(0.005)
    late = Collector()
    engine.submit(_job(engine, late_adapter, "what are your opening hours on sunday", late, max_tokens=8))
    assert late.done.wait(30)
    assert not long.done.is_set()  # ... and the late one joined it rather than waiting for it
    assert late.text == solo.text  # joining (a left-padded cache merge) does not change the answer
    assert long.done.wait(30)
