"""A bounded soak on the real server (uvicorn on loopback): many clients over mixed adapters, some
leaving mid-stream. Everyone who stays gets every answer; memory after warm-up stays flat; nothing is
left running. The 10,000-request, 64-client version is `benchmarks/serve_abuse.py`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import psutil
import pytest

from tests.conftest import free_port
from tests.unit.serve.conftest import make_adapter
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry

CLIENTS = 16
REQUESTS = 320
LEAVERS = {3, 11}  # 2 of 16 clients (~10%) close every stream after its first chunks
QUESTIONS = ["what time do you open", "oat milk?", "is there wifi", "hello", "can I bring my dog"]


@pytest.fixture()
def soak_server(tiny_model_dir: Path, tmp_path: Path) -> Iterator[tuple[str, dict[str, str], int]]:
    """`tunesmith serve` in its own process (its RSS is what is measured), three tenants' adapters."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    store = ServingStore(Registry(url).connect())
    keys = {}
    for index, tenant in enumerate(("acme", "globex", "initech")):
        adapter = make_adapter(tiny_model_dir, tmp_path / tenant, seed=index)
        store.register_source(f"{tenant}-bot", str(adapter), tenant=tenant)
        keys[tenant] = store.create_key(tenant, admin=False)
    keys["admin"] = store.create_key(None, admin=True)
    port = free_port()
    command = [sys.executable, "-m", "tunesmith", "serve", "--model", str(tiny_model_dir), "--port", str(port),
               "--max-batch-size", "16", "--max-loaded-adapters", "2", "--tenant-max-concurrent", "8"]  # fmt: skip
    env = {**os.environ, "TUNESMITH_DATABASE_URL": url, "TUNESMITH_HOME": str(tmp_path)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base, keys, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


async def _soak(url: str, keys: dict[str, str], pid: int, rss: list[int]) -> dict[str, int]:
    tenants = sorted(set(keys) - {"admin"})
    counts = {"ok": 0, "left": 0, "failed": 0}
    failures: list[str] = []
    next_request = iter(range(REQUESTS))

    async def client(index: int) -> None:
        tenant = tenants[index % len(tenants)]
        async with httpx.AsyncClient(base_url=url, timeout=120,
                                     headers={"Authorization": f"Bearer {keys[tenant]}"}) as http:  # fmt: skip
            for number in next_request:
                if number == REQUESTS // 4:
                    rss.append(psutil.Process(pid).memory_info().rss)  # after warm-up
                model = f"{tenant}-bot" if number % 3 else "base"
                body = {"model": model, "messages": [{"role": "user", "content": QUESTIONS[number % 5]}],
                        "max_tokens": 12, "temperature": 1.0, "stream": number % 2 == 0 or index in LEAVERS}  # fmt: skip
                try:
                    if not body["stream"]:
                        response = await http.post("/v1/chat/completions", json=body)
                        ok = response.status_code == 200 and response.json()["choices"][0]["finish_reason"]
                        counts["ok" if ok else "failed"] += 1
                        if not ok:
                            failures.append(response.text)
                        continue
                    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        lines = []
                        async for line in response.aiter_lines():
                            lines.append(line)
                            if index in LEAVERS and len(lines) >= 4:
                                break  # leave mid-stream: the connection closes with the block
                    if index in LEAVERS:
                        counts["left"] += 1
                        continue
                    done = response.status_code == 200 and "data: [DONE]" in lines
                    done = done and not any(line.startswith('data: {"error"') for line in lines)
                    counts["ok" if done else "failed"] += 1
                    if not done:
                        failures.append(json.dumps(lines[-3:]))
                except httpx.HTTPError as error:
                    counts["failed"] += 1
                    failures.append(repr(error))

    await asyncio.gather(*(client(index) for index in range(CLIENTS)))
    assert not failures, failures[:5]
    return counts


def test_soak_mixed_adapters_with_clients_leaving_mid_stream(
    soak_server: tuple[str, dict[str, str], int],
) -> None:
    url, keys, pid = soak_server
    rss: list[int] = []
    counts = asyncio.run(_soak(url, keys, pid, rss))
    assert counts["failed"] == 0 and counts["ok"] + counts["left"] == REQUESTS and counts["left"] > 0
    deadline = time.monotonic() + 10  # the leavers' rows go at their next step
    while (health := httpx.get(f"{url}/health").json())["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health == {"status": "ok", "queued": 0, "running": 0}
    end = psutil.Process(pid).memory_info().rss
    assert end <= rss[0] * 1.10, (
        f"server RSS {rss[0] / 2**20:.0f} MB after warm-up, {end / 2**20:.0f} MB at the end"
    )
    metrics = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {keys['admin']}"}).text
    assert 'status="499"' in metrics  # the leavers were seen leaving
