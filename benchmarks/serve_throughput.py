"""Serving benchmark: the real `tunesmith serve` process on loopback, driven by concurrent HTTP clients.

One command:  .venv/bin/python benchmarks/serve_throughput.py [--model tiny|embedded] [--json-out FILE]

Model: the embedded SmolLM2-135M-Instruct by default (`--model DIR` for any local model). Eight LoRA
adapters (r=16, all linear layers, random B so each answers differently) are saved next to the registry
in a temporary TUNESMITH_HOME and served with `--adapter a0=... --adapter a7=...`. The server runs in its
own process; the clients (asyncio + httpx2, the client the openai package is built on) in this one.
Every request is a greedy chat completion with `max_tokens` (tokens/s counts the completion tokens the
server reports, so early stops are not flattered). Figures:

1. batching: the same `--requests` requests one at a time, then from 16 concurrent clients (tokens/s);
2. adapters: the same traffic from 16 clients on one adapter vs spread over 8 (tokens/s), and server
   RSS growth per loaded adapter next to the adapter's file size and the base model's size;
3. load: `--load-requests` streaming requests from 32 concurrent clients over the 8 adapters:
   failures, p50/p95 latency and time to first token.

The machine's load average (1, 5, 15 min) is printed with each phase's figures; other work on the
machine slows them.

Measured 2026-11-26 (`--threads 1`, embedded model, max_tokens 32) on a shared 2-core AVX2 CPU with other jobs
running beside it (1-min load average 1.8-2.1 during the first three phases, 3.3 at the end of the load
run), with the stacked LoRA forward (`tunesmith/lora/stacked.py`):
  batching: 14.3 tokens/s one at a time -> 73.2 with 16 clients (5.1x; the 7.9x below was measured at a
            load of 4-6, and one at a time gained the most from the lighter load: 5.9 -> 14.3)
  adapters: 69.7 tokens/s over 8 adapters vs 73.2 on one (0.95x; goal 0.8x). A second run (load 2.6-2.8,
            --load-requests 32): 71.9 vs 75.6 (0.95x), 14.5 one at a time.
            Each loaded adapter takes a 19.6 MB slot in the stacked weights (fp32, rank 16: the adapter
            file's size). Server RSS grew 0-30 MB per adapter loaded, 67 MB (second run: 102 MB) for all
            8: less than 8 slots because the phase first unloads every adapter and the allocator reuses
            that memory. Base model 538 MB.
  load:     1,000 requests, 32 clients, 8 adapters: 0 failed; latency p50 19.1 s / p95 33.9 s,
            time to first token p50 0.59 s / p95 3.7 s; 46.5 tokens/s overall

Before (2026-11-26, same machine, load average 4-6; peft's `adapter_names` for mixed batches, the plain
peft forward for one adapter): 5.9 -> 46.6 tokens/s (7.9x); 8 adapters 27.6 vs one 46.6 tokens/s (0.59x);
RSS 16-22 MB per adapter; load: 0 failed, latency p50 30 s / p95 38 s, time to first token p50 1.05 s /
p95 6.8 s, 34 tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
QUESTIONS = [
    "What time do you open on Sundays?", "Do you have oat milk?", "Is there wifi here?", "Can I bring my dog?",
    "Where is the nearest station?", "Any vegan cakes today?", "How much is a latte?", "Do you take cards?",
]  # fmt: skip


def make_adapters(model: str, out: Path, count: int) -> list[Path]:
    """`count` LoRA adapters with random B matrices, saved like a training run saves them."""
    import torch

    from tunesmith.models.adapters import add_lora, save_artifact
    from tunesmith.models.loading import load_model, load_tokenizer, resolve_model

    path = resolve_model(model)
    tokenizer = load_tokenizer(path)
    peft_model = add_lora(load_model(path), rank=16, alpha=32, dropout=0.0, targets="all-linear")
    directories = []
    for index in range(count):
        generator = torch.Generator().manual_seed(index)
        with torch.no_grad():
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.02)
        directory = out / f"a{index}"
        save_artifact(peft_model, tokenizer, directory, card="benchmark adapter")
        directories.append(directory)
    return directories


def start_server(
    model: str, adapters: list[Path], home: Path, max_batch_size: int, threads: int | None
) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "tunesmith", "serve", "--model", model, "--no-auth", "--port", str(port),
               "--max-batch-size", str(max_batch_size), "--max-loaded-adapters", str(len(adapters)),
               *[arg for i, a in enumerate(adapters) for arg in ("--adapter", f"a{i}={a}")],
               *(["--threads", str(threads)] if threads else [])]  # fmt: skip
    env = {**os.environ, "TUNESMITH_HOME": str(home)}
    log = (home / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited: {(home / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit("server did not start")


async def one_request(
    client: httpx.AsyncClient, model: str, question: str, max_tokens: int
) -> dict[str, Any]:
    """A streaming chat completion: latency, time to first token, completion tokens, ok."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    started = time.perf_counter()
    first = None
    tokens = 0
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                return {"ok": False, "status": response.status_code}
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as error:
        return {"ok": False, "error": repr(error)}
    return {"ok": True, "latency": time.perf_counter() - started, "ttft": first, "tokens": tokens}


async def run_load(
    url: str, models: list[str], requests: int, concurrency: int, max_tokens: int
) -> dict[str, Any]:
    """`requests` requests from `concurrency` clients; request i asks model i mod len(models)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(requests):
        queue.put_nowait(index)
    results: list[dict[str, Any]] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                model = models[index % len(models)]
                results.append(
                    await one_request(client, model, QUESTIONS[index % len(QUESTIONS)], max_tokens)
                )

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ok = [r for r in results if r["ok"]]
    latencies = sorted(r["latency"] for r in ok)
    ttfts = sorted(r["ttft"] for r in ok if r["ttft"] is not None)
    tokens = sum(r["tokens"] for r in ok)
    return {
        "requests": requests, "concurrency": concurrency, "failed": len(results) - len(ok), "wall_s": wall,
        "completion_tokens": tokens, "tokens_per_s": tokens / wall,
        "p50_latency_s": _quantile(latencies, 0.5), "p95_latency_s": _quantile(latencies, 0.95),
        "p50_ttft_s": _quantile(ttfts, 0.5), "p95_ttft_s": _quantile(ttfts, 0.95),
    }  # fmt: skip


def _report(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Print one phase's figures as they come (a long run shows progress), and return them with the
    machine's load average at the phase's end (phases are compared, and other work slows each alike or not)."""
    figures = {**figures, "load_average": os.getloadavg()}
    print(f"{name}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    return figures


def _quantile(values: list[float], q: float) -> float | None:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]
        if len(values) > 1
        else None
    )


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def memory_per_adapter(url: str, pid: int, adapters: list[Path], base_bytes: int) -> dict[str, Any]:
    """Unload all adapters, then load them one by one, recording RSS after each."""
    with httpx.Client(base_url=url, timeout=600) as client:
        for index in range(len(adapters)):
            client.post("/admin/adapters/unload", json={"model": f"a{index}"})
        rss = [rss_bytes(pid)]
        for index in range(len(adapters)):
            response = client.post("/admin/adapters/load", json={"model": f"a{index}"})
            response.raise_for_status()
            rss.append(rss_bytes(pid))
    growth = [after - before for before, after in zip(rss, rss[1:], strict=False)]
    return {
        "adapter_file_bytes": (adapters[0] / "adapter_model.safetensors").stat().st_size,
        "base_model_bytes": base_bytes,
        "rss_growth_per_adapter_bytes": growth,
        "rss_growth_8_adapters_bytes": rss[-1] - rss[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="Base model (catalog name or directory)."
    )
    parser.add_argument("--requests", type=int, default=32, help="Requests in the batching and adapter runs.")
    parser.add_argument("--load-requests", type=int, default=1000, help="Requests in the load run.")
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens of every request.")
    parser.add_argument("--max-batch-size", type=int, default=32, help="Server --max-batch-size.")
    parser.add_argument("--threads", type=int, help="Server --threads (1 on a busy shared CPU).")
    parser.add_argument("--json-out", type=Path, help="Also write the figures as JSON here.")
    args = parser.parse_args()

    from tunesmith.models.loading import resolve_model

    model_path = resolve_model(args.model)  # the cached embedded model, before TUNESMITH_HOME moves
    with tempfile.TemporaryDirectory(prefix="tunesmith-serve-bench-") as tmp:
        home = Path(tmp)
        os.environ["TUNESMITH_HOME"] = str(home)
        adapters = make_adapters(model_path, home / "adapters", 8)
        base_bytes = sum(p.stat().st_size for p in Path(model_path).glob("*.safetensors"))
        process, url = start_server(model_path, adapters, home, args.max_batch_size, args.threads)
        try:
            figures: dict[str, Any] = {
                "model": args.model,
                "max_tokens": args.max_tokens,
                "threads": args.threads,
            }
            warm = asyncio.run(run_load(url, ["a0"], 4, 4, 4))
            assert warm["failed"] == 0, warm
            one = _report("sequential", asyncio.run(run_load(url, ["a0"], args.requests, 1, args.max_tokens)))
            many = _report(
                "concurrent_16", asyncio.run(run_load(url, ["a0"], args.requests, 16, args.max_tokens))
            )
            figures["sequential"], figures["concurrent_16"] = one, many
            figures["batching_speedup"] = many["tokens_per_s"] / one["tokens_per_s"]
            mixed = _report(
                "mixed_8_adapters_16",
                asyncio.run(run_load(url, [f"a{i}" for i in range(8)], args.requests, 16, args.max_tokens)),
            )
            figures["mixed_8_adapters_16"] = mixed
            figures["mixed_vs_single"] = mixed["tokens_per_s"] / many["tokens_per_s"]
            figures["memory"] = _report("memory", memory_per_adapter(url, process.pid, adapters, base_bytes))
            figures["load_32"] = _report(
                "load_32",
                asyncio.run(
                    run_load(url, [f"a{i}" for i in range(8)], args.load_requests, 32, args.max_tokens)
                ),
            )
            figures["load_average"] = os.getloadavg()
        finally:
            process.terminate()
            process.wait(60)
    print(json.dumps(figures, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
