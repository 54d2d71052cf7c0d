"""tunesmith over vLLM against bare vLLM: what tunesmith's control plane costs on the same multi-LoRA load.

One command (a CUDA GPU with `pip install 'tunesmith[vllm]'`; it refuses, exit code 2, anywhere else):
  .venv/bin/python benchmarks/vllm_overhead.py [--model NAME_OR_DIR] [--adapters 8] [--requests 256]
      [--concurrency 64] [--max-tokens 128] [--json-out FILE]

The same `--requests` greedy chat requests (the same prompts, spread round-robin over `--adapters`
LoRA adapters with random B matrices, r=16 on all linear layers) run twice, each in its own process so
the GPU is free between them:

1. bare: vLLM's `AsyncLLMEngine` in-process, `--concurrency` requests in flight, each with its adapter's
   `LoRARequest`, the prompt rendered by the model's chat template;
2. tunesmith: `tunesmith serve --engine vllm --no-auth` with the same adapters, `--concurrency` HTTP
   clients calling `/v1/chat/completions` (auth off, request log on, as a default server runs).

Figures: completion tokens/s (the tokens each side reports), requests/s and p50/p95 latency, and the
ratio tunesmith/bare (issue 24's goal: at least 0.9). Not yet run: written on a machine without a GPU;
its first results go to benchmarks/RESULTS.md, dated, with the command and the machine.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import QUESTIONS, make_adapters

from tunesmith.config import ConfigError
from tunesmith.serve.inference import require_vllm


def _figures(latencies: list[float], tokens: int, seconds: float) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {
        "requests": len(latencies), "completion_tokens": tokens, "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1), "requests_per_s": round(len(latencies) / seconds, 2),
        "p50_latency_s": round(statistics.median(ordered), 3),
        "p95_latency_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
    }  # fmt: skip


async def _bounded(count: int, concurrency: int, one: Any) -> tuple[list[float], int, float]:
    """Run `one(index)` for every index, `concurrency` at a time: latencies, tokens, wall seconds."""
    gate, latencies, tokens = asyncio.Semaphore(concurrency), [], 0

    async def run(index: int) -> None:
        nonlocal tokens
        async with gate:
            started = time.monotonic()
            tokens += await one(index)
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    await asyncio.gather(*(run(index) for index in range(count)))
    return latencies, tokens, time.monotonic() - started


def bare(
    model: str, adapters: list[Path], requests: int, concurrency: int, max_tokens: int
) -> dict[str, Any]:
    """Phase 1, in this process: vLLM alone."""
    from vllm import AsyncEngineArgs, AsyncLLMEngine, SamplingParams
    from vllm.lora.request import LoRARequest

    from tunesmith.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model)
    args = AsyncEngineArgs(model=model, enable_lora=True, max_loras=len(adapters), max_cpu_loras=len(adapters),
                           max_lora_rank=16, max_num_seqs=concurrency, disable_log_stats=True)  # fmt: skip
    params = SamplingParams(max_tokens=max_tokens, temperature=0)

    async def main() -> dict[str, Any]:
        llm = AsyncLLMEngine.from_engine_args(args)

        async def one(index: int) -> int:
            messages = [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}]
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
            slot = index % len(adapters)
            lora = LoRARequest(f"a{slot}", slot + 1, str(adapters[slot]))
            final = None
            async for output in llm.generate(
                {"prompt_token_ids": ids}, params, f"r{index}", lora_request=lora
            ):
                final = output
            assert final is not None
            return len(final.outputs[0].token_ids)

        await _bounded(concurrency, concurrency, one)  # warm-up: every adapter loaded, kernels compiled
        figures = _figures(*await _bounded(requests, concurrency, one))
        llm.shutdown()
        return figures

    return asyncio.run(main())


def tunesmith(model: str, adapters: list[Path], requests: int, concurrency: int, max_tokens: int,
              home: Path) -> dict[str, Any]:  # fmt: skip
    """Phase 2: `tunesmith serve --engine vllm` in its own process, driven over HTTP."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "tunesmith", "serve", "--engine", "vllm", "--model", model, "--no-auth",
               "--port", str(port), "--max-batch-size", str(concurrency), "--max-loaded-adapters",
               str(len(adapters)), "--max-lora-rank", "16", "--max-tokens-limit", str(max_tokens),
               *[arg for i, a in enumerate(adapters) for arg in ("--adapter", f"a{i}={a}")]]  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ, "TUNESMITH_HOME": str(home)})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 900  # vLLM loads the model and compiles its kernels
        while True:
            assert server.poll() is None, "tunesmith serve --engine vllm exited"
            assert time.monotonic() < deadline, "the server did not start in 15 minutes"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(1)

        async def main() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=url, timeout=600) as client:

                async def one(index: int) -> int:
                    body = {"model": f"a{index % len(adapters)}", "max_tokens": max_tokens, "temperature": 0,
                            "messages": [{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}]}  # fmt: skip
                    response = await client.post("/v1/chat/completions", json=body)
                    response.raise_for_status()
                    return int(response.json()["usage"]["completion_tokens"])

                await _bounded(concurrency, concurrency, one)  # warm-up, as for bare vLLM
                return _figures(*await _bounded(requests, concurrency, one))

        return asyncio.run(main())
    finally:
        server.terminate()
        server.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--phase", choices=["bare"], help=argparse.SUPPRESS)  # the child process's phase
    parser.add_argument("--adapter-root", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    try:
        require_vllm()
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    from tunesmith.models.loading import resolve_model

    model = resolve_model(options.model)
    if options.phase == "bare":  # the child: its figures to --json-out (vLLM logs on stdout)
        adapters = sorted(options.adapter_root.iterdir())
        figures = bare(model, adapters, options.requests, options.concurrency, options.max_tokens)
        options.json_out.write_text(json.dumps(figures), encoding="utf-8")
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        adapters = make_adapters(model, root / "adapters", options.adapters)
        subprocess.run(
            [sys.executable, __file__, "--phase", "bare", "--adapter-root", str(root / "adapters"), "--model", model,
             "--requests", str(options.requests), "--concurrency", str(options.concurrency),
             "--max-tokens", str(options.max_tokens), "--json-out", str(root / "bare.json")],
            check=True,
        )  # fmt: skip
        bare_figures = json.loads((root / "bare.json").read_text(encoding="utf-8"))
        ours = tunesmith(
            model, adapters, options.requests, options.concurrency, options.max_tokens, root / "home"
        )
    result = {
        "date": time.strftime("%Y-%m-%d"), "model": options.model, "adapters": options.adapters,
        "concurrency": options.concurrency, "max_tokens": options.max_tokens, "bare_vllm": bare_figures,
        "tunesmith_vllm": ours, "tokens_per_s_ratio": round(ours["tokens_per_s"] / bare_figures["tokens_per_s"], 3),
    }  # fmt: skip
    text = json.dumps(result, indent=2)
    print(text)
    if options.json_out:
        options.json_out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
