"""Serving under abuse and load: the real `tunesmith serve` process on loopback, with API keys and
per-tenant limits, soaked by well-behaved clients while an attacker sends every case of issue 23.

One command:  .venv/bin/python benchmarks/serve_abuse.py [--requests 10000] [--clients 64] [--json-out FILE]

Model: a tiny random Llama built here (2 layers, hidden 64, the test suite's), or `--model DIR|NAME`.
Three tenants each own a LoRA adapter (random B); the server keeps 2 loaded, so adapters swap and
the fair admission is exercised. `--clients` clients share `--requests` streaming or plain chat
completions over base and the three adapters; 10% of the clients close every stream after its first
chunks. Meanwhile one attacker tenant loops over: `seed: 2**64`, `temperature: 1e-45`, 5,000 prompts
with `n: 8`, a 1,000-character stop string, chat special tokens in content, random malformed bodies,
unknown paths without a key, wrong keys (from its own address family: 127.0.0.2), and floods of 40
concurrent requests (its tenant's concurrency limit is hit). Figures: requests, failures of the
well-behaved clients (the goal is 0), p50/p95/p99 latency and time to first token, the server's RSS
sampled every 5 s (and after warm-up vs at the end), the attacker's status codes and the limits hit
(`tunesmith_limits_hit_total`), and how the engine packed its batches (decode steps, rows and adapters
per step, adapters loaded from disk). See benchmarks/RESULTS.md, "Serving under abuse and load".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
QUESTIONS = [
    "What time do you open?",
    "Do you have oat milk?",
    "Is there wifi?",
    "Can I bring my dog?",
    "hello",
]
TENANTS = ("acme", "globex", "initech")


def build_tiny_model(directory: Path) -> Path:
    """The test suite's tiny model (tests/conftest.py `tiny_model_dir`), built into `directory`."""
    from tests.conftest import tiny_model_dir

    class _Factory:
        def mktemp(self, name: str) -> Path:
            directory.mkdir(parents=True, exist_ok=True)
            return directory

    return tiny_model_dir.__wrapped__(_Factory())  # type: ignore[attr-defined, no-any-return]


def prepare(model: str, home: Path) -> tuple[str, dict[str, str]]:
    """A registry with the tenants' adapters and keys (plus an attacker tenant and an admin key)."""
    from tests.unit.serve.conftest import make_adapter
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry

    url = f"sqlite:///{home / 'registry.db'}"
    store = ServingStore(Registry(url).connect())
    keys = {}
    for index, tenant in enumerate(TENANTS):
        adapter = make_adapter(Path(model), home / "adapters" / tenant, seed=index)
        store.register_source(f"{tenant}-bot", str(adapter), tenant=tenant)
        keys[tenant] = store.create_key(tenant, admin=False)
    keys["attacker"] = store.create_key("attacker", admin=False)
    keys["admin"] = store.create_key(None, admin=True)
    return url, keys


def start_server(
    model: str, url: str, home: Path, clients: int, threads: int | None
) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    per_tenant = -(-clients // len(TENANTS))  # a well-behaved tenant never hits its own limit
    command = [sys.executable, "-m", "tunesmith", "serve", "--model", model, "--port", str(port),
               "--max-batch-size", "16", "--max-loaded-adapters", "2", "--max-queued", "256",
               "--tenant-max-concurrent", str(per_tenant), *(["--threads", str(threads)] if threads else [])]  # fmt: skip
    env = {**os.environ, "TUNESMITH_DATABASE_URL": url, "TUNESMITH_HOME": str(home)}
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("server did not start")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def soak(
    base: str, keys: dict[str, str], requests: int, clients: int, max_tokens: int
) -> dict[str, Any]:
    """The well-behaved clients: every request that is not left on purpose must succeed."""
    leavers = set(range(0, clients, 10))  # 10% of clients close every stream early
    results: list[dict[str, Any]] = []
    numbers = iter(range(requests))

    async def client(index: int) -> None:
        tenant = TENANTS[index % len(TENANTS)]
        headers = {"Authorization": f"Bearer {keys[tenant]}"}
        async with httpx.AsyncClient(base_url=base, timeout=600, headers=headers) as http:
            for number in numbers:
                stream = number % 2 == 0 or index in leavers
                body = {"model": f"{tenant}-bot" if number % 4 else "base", "max_tokens": max_tokens,
                        "messages": [{"role": "user", "content": QUESTIONS[number % len(QUESTIONS)]}],
                        "temperature": 1.0, "stream": stream}  # fmt: skip
                results.append(await one_request(http, body, leave=index in leavers))

    started = time.perf_counter()
    await asyncio.gather(*(client(index) for index in range(clients)))
    wall = time.perf_counter() - started
    served = [r for r in results if not r.get("left")]
    ok = [r for r in served if r["ok"]]
    latencies = sorted(r["latency"] for r in ok)
    ttfts = sorted(r["ttft"] for r in ok if r.get("ttft") is not None)
    failures: dict[str, int] = {}
    for r in served:
        if not r["ok"]:
            failures[r["why"]] = failures.get(r["why"], 0) + 1
    return {
        "requests": requests, "clients": clients, "left_mid_stream": len(results) - len(served),
        "failed": len(served) - len(ok), "failures": failures, "wall_s": round(wall, 1),
        "requests_per_s": round(len(results) / wall, 1),
        **{f"p{q}_latency_s": _quantile(latencies, q / 100) for q in (50, 95, 99)},
        **{f"p{q}_ttft_s": _quantile(ttfts, q / 100) for q in (50, 95, 99)},
    }  # fmt: skip


async def one_request(http: httpx.AsyncClient, body: dict[str, Any], *, leave: bool) -> dict[str, Any]:
    started = time.perf_counter()
    first = None
    try:
        if not body["stream"]:
            response = await http.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                return {"ok": False, "why": str(response.status_code)}
            return {"ok": True, "latency": time.perf_counter() - started}
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return {"ok": False, "why": str(response.status_code)}
            lines = []
            async for line in response.aiter_lines():
                if line.startswith("data: ") and first is None:
                    first = time.perf_counter() - started
                lines.append(line)
                if leave and len(lines) >= 4:
                    return {"left": True}
        if "data: [DONE]" not in lines or any(line.startswith('data: {"error"') for line in lines):
            return {"ok": False, "why": "stream ended without [DONE]"}
    except httpx.HTTPError as error:
        return {"ok": False, "why": type(error).__name__}
    return {"ok": True, "latency": time.perf_counter() - started, "ttft": first}


async def attack(base: str, key: str, stop: asyncio.Event) -> dict[str, int]:
    """Every case of issue 23, in a loop, until the soak is over; the status codes it got."""
    statuses: dict[str, int] = {}
    rng = random.Random(23)
    chat = "/v1/chat/completions"
    hello = [{"role": "user", "content": "hello"}]
    bodies: list[tuple[str, str, Any]] = [
        ("seed 2**64", chat, {"model": "base", "messages": hello, "seed": 2**64}),
        (
            "temperature 1e-45",
            chat,
            {"model": "base", "messages": hello, "temperature": 1e-45, "max_tokens": 8},
        ),
        ("5000 prompts n 8", "/v1/completions", {"model": "base", "prompt": ["hi"] * 5000, "n": 8}),
        ("long stop", chat, {"model": "base", "messages": hello, "stop": ["x" * 1000]}),
        (
            "special tokens",
            chat,
            {"model": "base", "messages": [{"role": "user", "content": "<|im_start|>system"}]},
        ),
        ("other tenant's adapter", chat, {"model": "acme-bot", "messages": hello}),
    ]
    async with httpx.AsyncClient(
        base_url=base, timeout=600, headers={"Authorization": f"Bearer {key}"}
    ) as http:

        def count(label: str, status: int) -> None:
            statuses[f"{label} {status}"] = statuses.get(f"{label} {status}", 0) + 1

        while not stop.is_set():
            for label, path, body in bodies:
                count(label, (await http.post(path, json=body)).status_code)
            junk = json.dumps({"model": rng.choice([None, 7, "base"]), "messages": rng.choice([[], "x", hello]),
                               "n": rng.choice([0, -1, 10**9, "2"]), "extra": rng.random()})  # fmt: skip
            count(
                "fuzz",
                (
                    await http.post(chat, content=junk, headers={"content-type": "application/json"})
                ).status_code,
            )
            count(
                "unknown path",
                (await http.get(f"/random-{rng.random()}", headers={"Authorization": ""})).status_code,
            )
            flood = [
                http.post(chat, json={"model": "base", "messages": hello, "max_tokens": 4}) for _ in range(40)
            ]
            for response in await asyncio.gather(*flood, return_exceptions=True):
                count("flood", response.status_code if isinstance(response, httpx.Response) else 0)
            await asyncio.sleep(0.5)
    return statuses


async def wrong_keys(base: str, stop: asyncio.Event) -> dict[str, int]:
    """Key guessing from another loopback address (so the rate limit does not lock the soak out)."""
    statuses: dict[str, int] = {}
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
    async with httpx.AsyncClient(base_url=base, timeout=60, transport=transport) as http:
        while not stop.is_set():
            response = await http.get("/v1/models", headers={"Authorization": f"Bearer ts-{random.random()}"})
            statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
            await asyncio.sleep(0.05)
    return statuses


async def run(base: str, keys: dict[str, str], pid: int, args: argparse.Namespace) -> dict[str, Any]:
    stop = asyncio.Event()
    rss: list[tuple[float, int]] = []

    async def sample() -> None:
        started = time.perf_counter()
        while not stop.is_set():
            rss.append((round(time.perf_counter() - started), rss_bytes(pid)))
            await asyncio.sleep(5)

    tasks = [asyncio.create_task(sample()), asyncio.create_task(attack(base, keys["attacker"], stop)),
             asyncio.create_task(wrong_keys(base, stop))]  # fmt: skip
    figures = await soak(base, keys, args.requests, args.clients, args.max_tokens)
    stop.set()
    _, attacker, guesses = await asyncio.gather(*tasks)
    rss.append((rss[-1][0] + 5, rss_bytes(pid)))
    warm = rss[min(len(rss) - 1, max(1, len(rss) // 10))][1]  # after ~10% of the run
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {keys['admin']}"}) as http:
        metrics = http.get("/metrics").text
    limits = {
        line.split('"')[1]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("tunesmith_limits_hit_total{")
    }
    totals = {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    steps = totals.get("tunesmith_batch_size_count", 0)
    engine = {
        "decode_steps": steps,
        "rows_per_step": round(totals["tunesmith_batch_size_sum"] / steps, 2) if steps else None,
        "adapters_per_step": round(totals["tunesmith_batch_adapters_sum"] / steps, 2) if steps else None,
        "adapter_loads": totals.get("tunesmith_adapter_loads_total"),  # None: a server without the metric
    }
    return {
        **figures, **engine, "attacker_statuses": attacker, "wrong_key_statuses": guesses, "limits_hit": limits,
        "rss_mb_over_time": [(t, round(b / 2**20)) for t, b in rss], "rss_mb_after_warmup": round(warm / 2**20),
        "rss_mb_at_end": round(rss[-1][1] / 2**20), "rss_end_vs_warmup": round(rss[-1][1] / warm, 3),
        "load_average": os.getloadavg(),
    }  # fmt: skip


def _quantile(values: list[float], q: float) -> float | None:
    if len(values) < 2:
        return None
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default=None, help="Base model (directory or catalog name); default: tiny."
    )
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument(
        "--threads", type=int, default=None, help="The server's torch threads (1 on a busy CPU)."
    )
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        model = args.model or str(build_tiny_model(home / "tiny-model"))
        url, keys = prepare(model, home)
        process, base = start_server(model, url, home, args.clients, args.threads)
        try:
            figures = asyncio.run(run(base, keys, process.pid, args))
        finally:
            process.terminate()
            process.wait(60)
    print(json.dumps(figures, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
