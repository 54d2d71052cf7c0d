"""The server killed with SIGKILL under load, on SQLite and on PostgreSQL: the registry opens again,
every response and every feedback the clients were told about is there, nothing is half-written, and
the server starts again on it. Bounded: a few seconds of load, then the kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
from sqlalchemy import select

from tests.conftest import free_port
from tunesmith.registry.serving import FeedbackRecord, RequestLogRecord
from tunesmith.registry.store import Registry

HELLO = [{"role": "user", "content": "hello"}]


def _start(model: Path, url: str, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "TUNESMITH_DATABASE_URL": url, "TUNESMITH_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "tunesmith", "serve", "--model", str(model), "--no-auth", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited while starting"
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start")


def test_sigkill_under_load_loses_no_acknowledged_row(
    tiny_model_dir: Path, database_url: str, tmp_path: Path
) -> None:
    Registry(database_url).connect()
    process, base = _start(tiny_model_dir, database_url, tmp_path)
    responses: list[str] = []  # ids of responses a client received
    rated: list[str] = []  # ids whose feedback got its 201
    stop = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                try:
                    body = {"model": "base", "messages": HELLO, "max_tokens": 4, "user": f"u{index}"}
                    answer = http.post("/v1/chat/completions", json=body)
                    if answer.status_code != 200:
                        continue
                    response_id = answer.json()["id"]
                    responses.append(response_id)
                    feedback = {"response_id": response_id, "rating": 1 + index % 5, "comment": "x" * 200}
                    if http.post("/v1/feedback", json=feedback).status_code == 201:
                        rated.append(response_id)
                except httpx.HTTPError:
                    return  # the server is gone

    threads = [threading.Thread(target=client, args=(index,), daemon=True) for index in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(rated) < 40 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # mid-load: requests and feedback in flight
    process.wait(30)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert len(rated) >= 40

    registry = Registry(database_url).connect()  # opens (and migrates) after the crash
    with registry.session() as session:
        logged = {row.id: row for row in session.scalars(select(RequestLogRecord))}
        feedback = list(session.scalars(select(FeedbackRecord)))
    assert set(responses) <= set(logged)
    assert set(rated) <= {row.response_id for row in feedback}
    for row in logged.values():  # whole rows only
        assert row.outputs is not None and len(row.outputs) == len(row.finish_reasons) == 1
        assert row.prompt == {"messages": HELLO} and row.completion_tokens >= 0
    assert all(row.response_id in logged and row.comment == "x" * 200 for row in feedback)

    process, base = _start(tiny_model_dir, database_url, tmp_path)  # and serves again on it
    try:
        body = {"model": "base", "messages": HELLO, "max_tokens": 2}
        assert httpx.post(f"{base}/v1/chat/completions", json=body, timeout=30).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
