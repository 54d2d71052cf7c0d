"""Generation throughput on one CPU thread, engine by engine, against the memory-bandwidth bound.

tunesmith's engine (and the engine before the fast decode path, given `--before-src`), transformers'
`generate` and llama.cpp, on the same model and prompts.

One command:  .venv/bin/python benchmarks/generate_throughput.py [--before-src DIR] [--json-out FILE]

Model: the embedded SmolLM2-135M-Instruct; greedy; `--tokens` new tokens a request (an answer may stop
earlier at end of turn: tokens/s counts the tokens generated). Figures, each engine in its own process:
- bound: a measured 64 MiB copy's bandwidth over the bytes of weights one decoded token reads;
- single-stream decode tokens/s (first token to last), time to first token of a ~500-token prompt;
- aggregate tokens/s with 1, 4, 16 (and `--streams`) requests submitted together, and their p95 time
  to first token; for tunesmith, 16 requests on one LoRA adapter and on 8 adapters mixed.
Engines: tunesmith's `GenerationEngine` driven in process (no HTTP): `before`, when `--before-src` names
a checkout of the engine before the fast decode path (`git worktree add ../before be53f58`: a
concatenated `DynamicCache`, whole prompts at once), `after` this checkout in fp32 (what `tunesmith
serve` runs on CPUs) and in bf16 where the CPU runs it natively (AVX512-BF16/AMX); transformers'
`generate` in that precision; llama.cpp through llama-cpp-python (`pip install .[llama]`, a source build) on GGUF files
written by tunesmith's exporter (f16 and q8_0), concurrency through its batched `llama_decode`
(one sequence a stream, as its server's parallel slots).
Results, dated, with command and machine: benchmarks/RESULTS.md ("Generation throughput").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
TOPICS = ["a lighthouse keeper", "a lost cat in Paris", "the first day at a new school", "a dragon who bakes",
          "a storm at sea", "a robot gardener", "a mountain village", "a time traveller's breakfast"]  # fmt: skip


def prompts(tokenizer: Any, count: int) -> list[list[int]]:
    """`count` chat prompts asking for a long story (token ids)."""
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )  # fmt: skip
        for i in range(count)
    ]


def long_prompt(tokenizer: Any, length: int = 500) -> list[int]:
    """A chat prompt of about `length` tokens: a passage to summarise."""
    passage = " ".join(
        f"On day {day} the keeper lit the lamp, logged the ships and mended the nets." for day in range(200)
    )
    ids = tokenizer(passage, add_special_tokens=False)["input_ids"][: length - 20]
    text = tokenizer.decode(ids)
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": f"Summarise: {text}"}],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=False,
        )  # fmt: skip
    )


def copy_bandwidth() -> float:
    """GB/s of a 64 MiB copy (bytes read + written), best of 10."""
    source = torch.empty(64 * 2**20, dtype=torch.uint8)
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(10):
        started = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.numel() / best / 1e9


# ---------------------------------------------------------------- tunesmith's engine (child process)


class _Sink:
    def __init__(self, started: float) -> None:
        self.started = started
        self.first: float | None = None
        self.end = 0.0
        self.tokens = 0
        self.done = threading.Event()

    def __call__(self, event: Any) -> None:
        if event.kind == "delta" and self.first is None:
            self.first = time.perf_counter()
        if event.kind in ("done", "error"):
            self.end = time.perf_counter()
            self.tokens = event.completion_tokens
            if self.first is None:
                self.first = self.end
            self.done.set()


def _drive(
    engine: Any, requests: list[tuple[tuple[str, Path] | None, list[int]]], tokens: int
) -> dict[str, Any]:
    from tunesmith.serve.jobs import GenerationJob

    started = time.perf_counter()
    sinks = [_Sink(started) for _ in requests]
    jobs = [
        GenerationJob(
            prompt_ids=ids,
            adapter=a[0] if a else None,
            adapter_path=a[1] if a else None,
            max_tokens=tokens,
            temperature=0.0,
            top_p=1.0,
            seed=None,
            stop=[],
            sink=sink,
        )  # fmt: skip
        for (a, ids), sink in zip(requests, sinks, strict=True)
    ]
    engine.submit_all(jobs)
    for sink in sinks:
        sink.done.wait()
    wall = time.perf_counter() - started
    ttfts = sorted(s.first - started for s in sinks if s.first is not None)
    total = sum(s.tokens for s in sinks)
    decode = [(s.tokens - 1) / (s.end - s.first) for s in sinks if s.first is not None and s.tokens > 1]
    return {"tokens": total, "tokens_per_s": total / wall, "ttft_p95": ttfts[int(0.95 * (len(ttfts) - 1))],
            "decode_tokens_per_s": sum(decode) / max(len(decode), 1)}  # fmt: skip


def engine_child(args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.models.loading import load_model, load_tokenizer, resolve_model
    from tunesmith.serve.adapters import AdapterCache
    from tunesmith.serve.engine import GenerationEngine
    from tunesmith.serve.metrics import ServeMetrics

    path = resolve_model("smollm2-135m-instruct")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = load_model(path, dtype=dtype).eval()
    if args.decode_linears:
        from tunesmith.models.decode import use_decode_linears

        use_decode_linears(model)
    tokenizer = load_tokenizer(path)
    adapters = [(f"a{i}@1", Path(p)) for i, p in enumerate(args.adapters)]
    cache = AdapterCache(model, path, capacity=max(len(adapters), 1))
    engine = GenerationEngine(
        cache, tokenizer, max_batch_size=max(args.streams), max_wait_s=0.05, metrics=ServeMetrics()
    )
    engine.start()
    asks = prompts(tokenizer, max(args.streams))
    figures: dict[str, Any] = {}
    _drive(engine, [(None, asks[0])], 4)  # warm up
    figures["single"] = _drive(engine, [(None, asks[0])], args.tokens)
    figures["ttft_500"] = _drive(engine, [(None, long_prompt(tokenizer))], 1)["ttft_p95"]
    for streams in args.streams:
        figures[f"streams_{streams}"] = _drive(engine, [(None, ids) for ids in asks[:streams]], args.tokens)
    if adapters:
        for adapter in adapters:  # load them all once, outside the timings
            _drive(engine, [(adapter, asks[0])], 1)
        figures["one_adapter_16"] = _drive(engine, [(adapters[0], ids) for ids in asks[:16]], args.tokens)
        mixed = [(adapters[i % len(adapters)], ids) for i, ids in enumerate(asks[:16])]
        figures["eight_adapters_16"] = _drive(engine, mixed, args.tokens)
    engine.close()
    return figures


def run_child(
    source: Path, dtype: str, decode_linears: bool, args: argparse.Namespace, adapters: list[Path]
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        command = [sys.executable, __file__, "--child", "--dtype", dtype, "--json-out", out.name, "--tokens", str(args.tokens),
                   "--streams", *map(str, args.streams), "--threads", str(args.threads),
                   *(["--decode-linears"] if decode_linears else []), "--adapters", *map(str, adapters)]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(source), "OMP_NUM_THREADS": str(args.threads)}
        subprocess.run(command, env=env, check=True)
        return dict(json.loads(Path(out.name).read_text(encoding="utf-8")))


# ---------------------------------------------------------------- transformers' generate


@torch.inference_mode()
def transformers_figures(dtype: torch.dtype, args: argparse.Namespace) -> dict[str, Any]:
    from tunesmith.models.loading import load_model, load_tokenizer, resolve_model

    path = resolve_model("smollm2-135m-instruct")
    model, tokenizer = load_model(path, dtype=dtype).eval(), load_tokenizer(path)
    tokenizer.padding_side = "left"
    asks = prompts(tokenizer, max(args.streams))

    def generate(batch: list[list[int]], new: int) -> tuple[int, float]:
        texts = [tokenizer.decode(ids) for ids in batch]
        encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        started = time.perf_counter()
        output = model.generate(
            **encoded, max_new_tokens=new, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        seconds = time.perf_counter() - started
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        return int((new_tokens != tokenizer.pad_token_id).sum()), seconds

    generate(asks[:1], 4)
    _, first = generate(asks[:1], 1)
    count, seconds = generate(asks[:1], args.tokens)
    figures: dict[str, Any] = {"single": {"decode_tokens_per_s": (count - 1) / (seconds - first)}}
    figures["ttft_500"] = generate([long_prompt(tokenizer)], 1)[1]
    for streams in args.streams:
        count, seconds = generate(asks[:streams], args.tokens)
        figures[f"streams_{streams}"] = {"tokens_per_s": count / seconds}
    return figures


# ---------------------------------------------------------------- llama.cpp


def export_gguf(directory: Path, file_types: list[str]) -> dict[str, Path]:
    from tunesmith.export.gguf import write_gguf
    from tunesmith.models.loading import load_tokenizer, resolve_model

    path = resolve_model("smollm2-135m-instruct")
    files = {}
    for file_type in file_types:
        files[file_type] = directory / f"smollm2-135m-{file_type}.gguf"
        if not files[file_type].is_file():
            write_gguf(Path(path), load_tokenizer(path), files[file_type], file_type)
    return files


def llama_figures(gguf: Path, args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp
    import numpy as np

    from tunesmith.models.loading import load_tokenizer, resolve_model

    tokenizer = load_tokenizer(resolve_model("smollm2-135m-instruct"))
    asks = prompts(tokenizer, max(args.streams))
    streams_max = max(args.streams)
    llm = llama_cpp.Llama(
        str(gguf),
        n_ctx=4096,
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 4096, 512, 512
    params.n_seq_max, params.kv_unified = streams_max, True
    params.n_threads = params.n_threads_batch = args.threads
    context = llama_cpp.llama_init_from_model(llm._model.model, params)
    batch = llama_cpp.llama_batch_init(4096, 0, streams_max)
    vocab = llm.n_vocab()
    eos = llm.token_eos()

    def decode(entries: list[tuple[int, int, int, bool]]) -> list[int]:
        """Run (token, position, sequence, wants logits) entries; the argmax of each wanted logits."""
        batch.n_tokens = len(entries)
        for i, (token, position, sequence, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, position, 1, logits
            batch.seq_id[i][0] = sequence
        if llama_cpp.llama_decode(context, batch) != 0:
            raise RuntimeError("llama_decode failed")
        wanted = [i for i, entry in enumerate(entries) if entry[3]]
        return [
            int(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(context, i), shape=(vocab,)).argmax())
            for i in wanted
        ]

    def generate(batch_prompts: list[list[int]], new: int) -> dict[str, Any]:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        started = time.perf_counter()
        entries = [
            (t, p, s, p == len(ids) - 1) for s, ids in enumerate(batch_prompts) for p, t in enumerate(ids)
        ]
        tokens: list[int] = []
        for at in range(0, len(entries), 512):  # prompts in chunks of n_batch
            tokens += decode(entries[at : at + 512])
        first = time.perf_counter() - started
        positions = [len(ids) for ids in batch_prompts]
        live = [s for s, token in enumerate(tokens) if token != eos]
        count = len(batch_prompts)
        for _ in range(new - 1):
            if not live:
                break
            out = decode([(tokens[s], positions[s], s, True) for s in live])
            for s, token in zip(live, out, strict=True):
                tokens[s], positions[s] = token, positions[s] + 1
            count += len(live)
            live = [s for s in live if tokens[s] != eos]
        seconds = time.perf_counter() - started
        return {
            "tokens": count,
            "tokens_per_s": count / seconds,
            "ttft": first,
            "decode_tokens_per_s": (count - len(batch_prompts)) / (seconds - first) / len(batch_prompts),
        }

    generate(asks[:1], 4)
    figures: dict[str, Any] = {
        "single": generate(asks[:1], args.tokens),
        "ttft_500": generate([long_prompt(tokenizer)], 1)["ttft"],
    }
    for streams in args.streams:
        figures[f"streams_{streams}"] = generate(asks[:streams], args.tokens)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(context)
    return figures


# ---------------------------------------------------------------- the table


def table(results: dict[str, Any]) -> str:
    """A markdown table of every engine's figures in `results` (missing figures: -)."""

    def cell(figures: dict[str, Any], *keys: str) -> str:
        value: Any = figures
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return "-"
            value = value[key]
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    streams = sorted(
        {
            int(k.split("_")[1])
            for f in results.values()
            if isinstance(f, dict)
            for k in f
            if k.startswith("streams_")
        }
    )
    head = ["engine", "1-stream decode tok/s", "TTFT 500-token prompt (s)"]
    head += [f"{n} streams tok/s" for n in streams] + [
        "p95 TTFT 16 streams (s)",
        "16 on 1 adapter tok/s",
        "16 on 8 adapters tok/s",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, figures in results.items():
        if not isinstance(figures, dict) or "single" not in figures:
            continue
        row = [name, cell(figures, "single", "decode_tokens_per_s"), cell(figures, "ttft_500")]
        row += [cell(figures, f"streams_{n}", "tokens_per_s") for n in streams]
        row += [
            cell(figures, "streams_16", "ttft_p95")
            if "ttft_p95" in figures.get("streams_16", {})
            else cell(figures, "streams_16", "ttft")
        ]
        row += [
            cell(figures, "one_adapter_16", "tokens_per_s"),
            cell(figures, "eight_adapters_16", "tokens_per_s"),
        ]
        lines.append("| " + " | ".join(row) + " |")
    bound = results.get("bound", {})
    if bound:
        figures = f"| bandwidth bound ({bound['copy_gb_s']:.1f} GB/s copy) | fp32 {bound['fp32']:.1f}, 16-bit {bound['16-bit']:.1f} |"
        lines.append(figures + " |" * (len(head) - 2))  # empty cells for the other columns
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=48, help="new tokens a request")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--before-src",
        type=Path,
        help="checkout of the engine before the fast decode path (be53f58), measured beside",
    )
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--only-llama", action="store_true", help="llama.cpp's figures alone")
    parser.add_argument(
        "--gguf-types",
        nargs="+",
        default=["f16", "q8_0"],
        choices=["f16", "q8_0"],
        help="the GGUF files llama.cpp runs (a llama.cpp built for another CPU may lack q8_0's instructions)",
    )
    parser.add_argument("--adapter-count", type=int, default=8)
    parser.add_argument("--json-out", type=Path)
    parser.add_argument(
        "--table", type=Path, nargs="+", help="print the table of saved --json-out files, merged"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--decode-linears", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--adapters", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.table:
        merged: dict[str, Any] = {}
        for file in args.table:
            merged |= json.loads(file.read_text(encoding="utf-8"))
        print(table(merged))
        return
    if args.child:
        Path(args.json_out).write_text(json.dumps(engine_child(args)), encoding="utf-8")
        return
    sys.path.insert(0, str(REPO / "benchmarks"))
    from serve_throughput import make_adapters

    from tunesmith.models.loading import default_device, supports_fast_bf16

    fast = "bf16" if supports_fast_bf16(default_device()) else "fp32"
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "load": os.getloadavg(),
    }
    bandwidth = copy_bandwidth()
    results["bound"] = {
        "copy_gb_s": bandwidth,
        "fp32": bandwidth * 1e9 / 538e6,
        "16-bit": bandwidth * 1e9 / 269e6,
    }
    print(json.dumps(results), flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        adapters = (
            []
            if args.only_llama
            else make_adapters("smollm2-135m-instruct", Path(scratch), args.adapter_count)
        )
        engines = {
            **(
                {}
                if args.before_src is None
                else {"tunesmith before (fp32)": (args.before_src, "fp32", False)}
            ),
            "tunesmith after (fp32)": (REPO, "fp32", False),
            f"tunesmith after ({fast})": (REPO, fast, True),
        }
        for name, (source, dtype, linears) in ({} if args.only_llama else engines).items():
            results[name] = run_child(source, dtype, linears, args, adapters)
            print(name, json.dumps(results[name]), flush=True)
        if not args.only_llama:
            results[f"transformers generate ({fast})"] = transformers_figures(
                torch.bfloat16 if fast == "bf16" else torch.float32, args
            )
            print(json.dumps(results[f"transformers generate ({fast})"]), flush=True)
        if not args.skip_llama:
            for file_type, gguf in export_gguf(Path(scratch), args.gguf_types).items():
                results[f"llama.cpp {file_type}"] = llama_figures(gguf, args)
                print(file_type, json.dumps(results[f"llama.cpp {file_type}"]), flush=True)
    results["load_after"] = os.getloadavg()
    print(table(results))
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
