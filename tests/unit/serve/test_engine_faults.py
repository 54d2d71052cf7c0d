"""The engine under faults and load: a bad row fails alone, memory follows the live rows, the queue is
bounded and fair (across tenants and adapters), and a stuck worker shows."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.unit.serve.test_engine import Collector, _job, _run
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.serve.adapters import AdapterCache
from tunesmith.serve.engine import EngineBusyError, GenerationEngine
from tunesmith.serve.jobs import AdapterLoadError, QueueTimeoutError, RowError
from tunesmith.serve.metrics import ServeMetrics


def _engine(
    tiny_model_dir: Path, capacity: int = 4, max_batch_size: int = 8, **options: float
) -> GenerationEngine:
    cache = AdapterCache(load_model(str(tiny_model_dir)).eval(), str(tiny_model_dir), capacity=capacity)
    return GenerationEngine(
        cache, load_tokenizer(str(tiny_model_dir)), max_batch_size=max_batch_size, max_wait_s=0.05,
        metrics=ServeMetrics(), **options,  # type: ignore[arg-type]
    )  # fmt: skip


@pytest.fixture()
def engine(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    engine = _engine(tiny_model_dir)
    engine.eos = set()  # rows run to max_tokens, whatever the random tiny model says
    engine.start()
    yield engine
    engine.close(timeout=30)


def test_a_bad_seed_or_tiny_temperature_fails_no_one_else(engine: GenerationEngine) -> None:
    good, bad_seed, tiny = Collector(), Collector(), Collector()
    jobs = [
        _job(engine, None, "hello", good, max_tokens=20, temperature=1.0, seed=1),
        _job(engine, None, "hi", bad_seed, seed=2**64),  # the generator refuses it while the batch forms
        _job(engine, None, "oat milk", tiny, temperature=1e-45),  # NaN probabilities before the fix
    ]
    _run(engine, jobs)
    assert isinstance(bad_seed.error, RowError) and bad_seed.finish_reason is None
    assert good.error is None and good.finish_reason == "length" and good.tokens == 20
    greedy = Collector()
    _run(engine, [_job(engine, None, "oat milk", greedy)])
    assert tiny.error is None and tiny.text == greedy.text  # a tiny temperature is greedy, not a crash


def test_staggered_streams_keep_the_cache_as_wide_as_the_live_rows(engine: GenerationEngine) -> None:
    """A chain of overlapping requests keeps one batch alive; its width must not grow with the chain."""
    widths: list[int] = []
    sinks: list[Collector] = []
    max_tokens = 24

    class Chained(Collector):
        def __call__(self, event):  # type: ignore[no-untyped-def]
            super().__call__(event)
            widths.append(engine.columns)
            if event.kind == "delta" and self.deltas == max_tokens // 2 and len(sinks) < 10:
                start_next()  # the next request joins while this one is half done

    def start_next() -> None:
        sink = Chained()
        sinks.append(sink)
        engine.submit(_job(engine, None, "hello there", sink, max_tokens=max_tokens))

    start_next()
    deadline = time.monotonic() + 60
    while (len(sinks) < 10 or not sinks[-1].done.is_set()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(sink.done.is_set() and sink.finish_reason == "length" for sink in sinks)
    prompt = len(engine.tokenizer("hello there")["input_ids"])
    assert max(widths) <= prompt + max_tokens + 1, max(widths)  # without trimming: ~ 10 × 12 columns


def test_a_full_queue_refuses_all_of_a_request(tiny_model_dir: Path) -> None:
    engine = _engine(tiny_model_dir, max_queued=3)  # not started: nothing leaves the queue
    engine.submit_all([_job(engine, None, "hi", Collector()) for _ in range(2)])
    with pytest.raises(EngineBusyError, match="busy"):
        engine.submit_all([_job(engine, None, "hi", Collector()) for _ in range(2)])
    assert engine.queued == 2  # none of the refused request's jobs were queued


def test_an_adapter_waiting_for_a_slot_is_not_starved(tiny_model_dir: Path, adapter_dirs: list[Path]) -> None:
    """With one adapter slot kept busy by a chain of requests, another adapter's request still runs."""
    engine = _engine(tiny_model_dir, capacity=1)
    engine.eos = set()
    engine.start()
    chain: list[Collector] = []
    busy = ("a@1", adapter_dirs[0])

    class Chained(Collector):
        def __call__(self, event):  # type: ignore[no-untyped-def]
            super().__call__(event)
            if event.kind == "delta" and self.deltas == 4 and len(chain) < 30:
                start_next()

    def start_next() -> None:
        sink = Chained()
        chain.append(sink)
        engine.submit(_job(engine, busy, "hello", sink, max_tokens=8))

    try:
        start_next()
        while not chain[0].deltas:
            time.sleep(0.005)
        waiting = Collector()
        engine.submit(_job(engine, ("b@1", adapter_dirs[1]), "hello", waiting, max_tokens=4))
        assert waiting.done.wait(60) and waiting.error is None
        assert len(chain) < 30 or not chain[-1].done.is_set()  # it ran while the chain was still going
        assert engine.metrics.registry.get_sample_value("tunesmith_adapter_loads_total") >= 2
    finally:
        engine.close(timeout=60)


def test_a_flooding_tenant_does_not_push_another_tenant_to_the_back(
    tiny_model_dir: Path, adapter_dirs: list[Path]
) -> None:
    """Tenant A queues 12 requests (over a hot adapter and a cold one), then B one: with 2 rows, B's and
    A's cold adapter's requests start in the first two batch slots after A's first, not after all of A's."""
    engine = _engine(tiny_model_dir, max_batch_size=2)
    engine.eos = set()
    started: list[str] = []  # request ids in the order their rows started

    class Recorder(Collector):
        def __call__(self, event):  # type: ignore[no-untyped-def]
            if not self.deltas and not self.done.is_set():
                started.append(self.job.request_id)  # type: ignore[union-attr]
            super().__call__(event)

    hot, cold = ("hot@1", adapter_dirs[0]), ("cold@1", adapter_dirs[1])
    jobs = [_job(engine, hot, "hello", Recorder(), max_tokens=6, tenant="acme", request_id=f"acme-hot{i}")
            for i in range(11)]  # fmt: skip
    jobs += [_job(engine, cold, "hello", Recorder(), max_tokens=6, tenant="acme", request_id="acme-cold")]
    jobs += [_job(engine, None, "hello", Recorder(), max_tokens=6, tenant="globex", request_id="globex")]
    release = threading.Event()
    engine.start()
    try:
        engine.call(lambda: release.wait(30))  # everything queues before the first batch forms
        engine.submit_all(jobs[:-1])
        engine.submit(jobs[-1])
        release.set()
        _run(engine, [])
        assert all(job.sink.done.wait(60) for job in jobs)  # type: ignore[attr-defined]
    finally:
        engine.close(timeout=60)
    assert started.index("globex") <= 1 and started.index("acme-cold") <= 3, started
    assert len(started) == 13


def test_queued_too_long_fails_with_a_timeout_and_a_stuck_worker_shows(tiny_model_dir: Path) -> None:
    engine = _engine(tiny_model_dir, max_queue_wait_s=0.2)
    engine.start()
    try:
        assert engine.stalled_for() == 0.0  # idle is not stuck
        release = threading.Event()
        engine.call(lambda: release.wait(5))  # the worker is stuck in a call
        sink = Collector()
        engine.submit(_job(engine, None, "hello", sink))
        time.sleep(0.4)
        assert engine.stalled_for() >= 0.3
        release.set()
        assert sink.done.wait(10) and isinstance(sink.error, QueueTimeoutError)
        assert engine.metrics.registry.get_sample_value(
            "tunesmith_limits_hit_total", {"limit": "queue_timeout"}
        )
    finally:
        engine.close(timeout=30)


def test_an_adapter_that_cannot_load_names_no_server_path(engine: GenerationEngine, tmp_path: Path) -> None:
    sink = Collector()
    _run(engine, [_job(engine, ("ghost@1", tmp_path / "ghost"), "hello", sink)])
    assert isinstance(sink.error, AdapterLoadError)
    assert "ghost@1" in str(sink.error) and str(tmp_path) not in str(sink.error)
