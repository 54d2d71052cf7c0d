"""The real server (uvicorn on loopback) at its limits, each test with the setting it exercises: a tenant
over its token rate, a request over the request timeout, and free rows shared by tenants in turn. In
each, another tenant's requests are served as usual."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi import FastAPI

from tests.conftest import free_port, start_uvicorn
from tunesmith.config import ServeSpec
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.app import create_app
from tunesmith.serve.engine import GenerationEngine

HELLO = [{"role": "user", "content": "hello"}]
CHAT = "/v1/chat/completions"


@dataclass
class Server:
    url: str
    app: FastAPI
    keys: dict[str, str]

    @property
    def engine(self) -> GenerationEngine:
        engine: GenerationEngine = self.app.state.service.engine
        return engine

    def http(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=60
        )

    def chat(self, who: str, max_tokens: int, **fields: Any) -> httpx.Response:
        with self.http(who) as http:
            return http.post(
                CHAT, json={"model": "base", "messages": HELLO, "max_tokens": max_tokens, **fields}
            )


@contextmanager
def serving(tiny_model_dir: Path, tmp_path: Path, **settings: Any) -> Iterator[Server]:
    """A server on the tiny model with `settings`, and keys for the tenants acme and globex."""
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}").connect()
    store = ServingStore(registry)
    keys = {tenant: store.create_key(tenant, admin=False) for tenant in ("acme", "globex")}
    spec = ServeSpec(model=str(tiny_model_dir), port=free_port(), max_wait_ms=5, **settings)
    app = create_app(spec, registry)
    server, thread = start_uvicorn(app, spec.host, spec.port)
    try:
        yield Server(f"http://{spec.host}:{spec.port}", app, keys)
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def stalled(engine: GenerationEngine) -> Iterator[Callable[[int], None]]:
    """The worker held in a call, so requests queue; yields a wait for the queue to hold N generations."""
    release = threading.Event()
    engine.call(lambda: release.wait(30))

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 10
        while engine.queued < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.queued == count

    try:
        yield wait_for
    finally:
        release.set()


def _in_threads(calls: list[Callable[[], httpx.Response]]) -> tuple[list[threading.Thread], list[int]]:
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda call=call: statuses.append(call().status_code)) for call in calls
    ]
    for thread in threads:
        thread.start()
    return threads, statuses


def test_a_tenant_over_its_token_rate_gets_429_naming_the_limit_while_another_is_served(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with serving(tiny_model_dir, tmp_path, tenant_tokens_per_minute=600) as server:
        engine = server.engine
        with stalled(engine) as wait_for:  # acme's first two requests hold their reservations
            threads, statuses = _in_threads([lambda: server.chat("acme", 250)] * 2)
            wait_for(2)
            over = server.chat("acme", 250)  # prompt + 250 more than the ~84 tokens left of 600
            error = over.json()["error"]
            assert over.status_code == 429 and error["code"] == "rate_limit_exceeded", over.text
            assert "token rate limit" in error["message"] and "600 per minute" in error["message"]
            assert int(over.headers["retry-after"]) >= 10  # ~17 s until a minute's rate refills the gap
            never = server.chat("acme", 700)  # more than a whole minute's tokens: waiting would not help
            assert never.status_code == 400 and never.json()["error"]["param"] == "max_tokens", never.text
            assert "retry-after" not in never.headers
            more, more_statuses = _in_threads([lambda: server.chat("globex", 250)])  # its own bucket
            wait_for(3)
        for thread in threads + more:
            thread.join(60)
    assert statuses == [200, 200] and more_statuses == [200]
    assert (
        engine.metrics.registry.get_sample_value("tunesmith_limits_hit_total", {"limit": "tenant_tokens"})
        == 2
    )


def test_a_request_over_the_timeout_fails_alone_and_frees_its_row(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 600-token request at >= 10 ms a step runs past a 1.5 s timeout: a 503 naming the limit, its row
    leaves the batch and its tenant's one slot is free again, while another tenant's requests succeed."""
    with serving(tiny_model_dir, tmp_path, request_timeout_s=1.5, tenant_max_concurrent=1) as server:
        engine = server.engine
        engine.eos = set()  # rows run to max_tokens, whatever the random tiny model says
        forward = engine._forward

        def slow_forward(*args: Any, **kwargs: Any) -> Any:
            time.sleep(0.01)
            return forward(*args, **kwargs)

        monkeypatch.setattr(engine, "_forward", slow_forward)
        statuses: list[int] = []
        well_behaved = threading.Thread(  # one at a time: every tenant may have one request in flight
            target=lambda: statuses.extend(server.chat("globex", 4).status_code for _ in range(6))
        )
        well_behaved.start()
        started = time.monotonic()
        slow = server.chat("acme", 600)
        assert 1.5 <= time.monotonic() - started < 4
        error = slow.json()["error"]
        assert slow.status_code == 503 and error["code"] == "request_timeout", slow.text
        assert "limit of 1.5 s" in error["message"] and int(slow.headers["retry-after"]) >= 1
        well_behaved.join(60)
        assert statuses == [200] * 6
        deadline = time.monotonic() + 1  # left running, its row would decode for 4 s more
        while engine.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.running == 0 and engine.queued == 0
        assert server.chat("acme", 4).status_code == 200  # its slot (at most 1 in flight) was released
        with server.http("acme") as http, http.stream(
            "POST", CHAT, json={"model": "base", "messages": HELLO, "max_tokens": 600, "stream": True}
        ) as stream:  # fmt: skip
            lines = [line for line in stream.iter_lines() if line]
        assert stream.status_code == 200 and "request_timeout" in lines[-1] and "data: [DONE]" not in lines
    metrics = engine.metrics.registry
    assert metrics.get_sample_value("tunesmith_limits_hit_total", {"limit": "request_timeout"}) == 2
    stream_503 = {"endpoint": "chat", "variant": "base", "status": "503"}  # not counted as a client leaving
    assert metrics.get_sample_value("tunesmith_requests_total", stream_503) == 1


def test_free_rows_go_to_tenants_in_turn(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One row: acme queues six requests, then globex one; globex's starts second, not seventh."""
    with serving(tiny_model_dir, tmp_path, max_batch_size=1) as server:
        engine = server.engine
        admitted: list[str] = []
        plan = engine._plan  # where jobs off the queue get their rows and prefills

        def recording(jobs: list[Any]) -> Any:
            admitted.extend(job.tenant for job in jobs)
            return plan(jobs)

        monkeypatch.setattr(engine, "_plan", recording)
        with stalled(engine) as wait_for:
            threads, statuses = _in_threads([lambda: server.chat("acme", 4)] * 6)
            wait_for(6)
            more, more_statuses = _in_threads([lambda: server.chat("globex", 4)])
            wait_for(7)
        for thread in threads + more:
            thread.join(60)
    assert statuses == [200] * 6 and more_statuses == [200]
    assert admitted.index("globex") == 1 and len(admitted) == 7, admitted
