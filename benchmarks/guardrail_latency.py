"""Latency the non-model guardrails add to a request: prompt checks, the streamed answer's scanner, the lookup.

One command:  .venv/bin/python benchmarks/guardrail_latency.py [--requests 500] [--seed 0]

Each simulated request has a chat prompt of about 1,500 characters (a system prompt, two earlier
turns, a user message holding an email and an order number) and a 2,000-character answer (support
prose with order numbers, dates, versions, prices, an email and a phone number) streamed in chunks
of 1-6 characters, as a tokenizer's pieces arrive. In one run, request by request, it times:
- no guardrails: the same loop passing each chunk through untouched (the baseline);
- guardrails: `check_input` on the prompt's texts plus every `OutputScanner.feed` and `finish` call,
  with every non-model guard on (PII redact both ways, a 40-term blocklist with multi-word terms, the
  topic allow-list, lengths), once without and once with 3 regex patterns (which hold 64 characters);
- the settings lookup a server makes per request (`GuardrailStore.find` on a SQLite registry).
Added latency = guarded time - baseline time, per request; p50/p95 over the requests. It also
reports how far the released text trails the generated text (held characters, sampled after every
chunk) and the slowest single chunk. The classifier guard runs the model and is not timed here.
Prints one JSON document; see benchmarks/RESULTS.md, "Guardrails".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunesmith.audit.guardrails import Guard, OutputScanner, check_input, compile_guard
from tunesmith.config import GuardrailSpec
from tunesmith.registry.guardrail_store import GuardrailStore
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry

PROSE = [
    "Thanks for reaching out about your order.", "I checked the shipment status in our system.",
    "The parcel left our warehouse on {date} and should arrive within three business days.",
    "Your order {order} was charged {price} including tax.", "Version {version} of the app fixes the sync issue.",
    "If the problem continues, please clear the cache and sign in again.",
    "You can also write to {email} and our team will answer within a day.",
    "For urgent matters call {phone} between nine and five.", "I have added a note to ticket INC-{ticket}.",
    "Our coffee beans are roasted weekly and shipped the same day.", "The latte subscription renews on {date}.",
    "Let me know if there is anything else I can help with today.",
]  # fmt: skip
TERMS = [f"term{i}" for i in range(30)] + [f"internal code {i}" for i in range(10)]
TOPICS = [
    "order",
    "orders",
    "shipping",
    "parcel",
    "refund",
    "coffee",
    "latte",
    "subscription",
    "app",
    "ticket",
]


def _fill(rng: random.Random, sentence: str) -> str:
    return sentence.format(
        date=f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}", order=f"ORD-{rng.randint(100000, 999999)}",
        price=f"${rng.randint(5, 300)}.{rng.randint(0, 99):02d}", version=f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}",
        email=f"help{rng.randint(1, 9)}@shop.example.com", phone=f"({rng.randint(201, 989)}) 555-{rng.randint(1000, 9999)}",
        ticket=rng.randint(100000, 999999),
    )  # fmt: skip


def _text(rng: random.Random, chars: int) -> str:
    pieces: list[str] = []
    while sum(len(piece) + 1 for piece in pieces) < chars:
        pieces.append(_fill(rng, rng.choice(PROSE)))
    return " ".join(pieces)[:chars]


def _chunks(rng: random.Random, text: str) -> list[str]:
    chunks, cursor = [], 0
    while cursor < len(text):
        size = rng.randint(1, 6)
        chunks.append(text[cursor : cursor + size])
        cursor += size
    return chunks


def _guard(patterns: bool) -> Guard:
    return compile_guard(GuardrailSpec.model_validate({
        "pii": {"input": "redact", "output": "redact"},
        "terms": {"blocklist": TERMS, "input": "block", "output": "redact",
                  "patterns": {"ORDER": r"ORD-\d{6}", "TICKET": r"INC-\d{6}", "KEY": r"sk-[A-Za-z0-9]{20,}"} if patterns else {}},
        "topics": {"allow": TOPICS}, "max_input_chars": 20_000, "max_output_chars": 20_000,
    }))  # fmt: skip


def _baseline(chunks: list[str]) -> float:
    start = time.perf_counter()
    sent = []
    for chunk in chunks:
        sent.append(chunk)
    "".join(sent)
    return time.perf_counter() - start


def _guarded(
    guard: Guard, texts: list[str], chunks: list[str], held: list[int], slowest: list[float]
) -> float:
    start = time.perf_counter()
    check_input(guard, texts, topic_texts=texts[-1:])
    scanner = OutputScanner(guard)
    for chunk in chunks:
        before = time.perf_counter()
        scanner.feed(chunk)
        slowest.append(time.perf_counter() - before)
        held.append(scanner.held_chars)
    scanner.finish()
    return time.perf_counter() - start


def _lookup_times(requests: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        registry = Registry(f"sqlite:///{folder}/registry.db").connect()
        ServingStore(registry).create_deployment("shop", [{"model": "base", "weight": 1}], tenant=None)
        store = GuardrailStore(registry)
        store.set("shop", GuardrailSpec.model_validate({"pii": {"output": "redact"}}), actor="benchmark")
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            store.find(["shop", "base"])
            times.append(time.perf_counter() - start)
        return times


def _summary(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "max_ms": round(float(ms.max()), 3)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    guards = {"no_patterns": _guard(patterns=False), "with_patterns": _guard(patterns=True)}
    baseline: list[float] = []
    added: dict[str, list[float]] = {name: [] for name in guards}
    held: dict[str, list[int]] = {name: [] for name in guards}
    slowest: dict[str, list[float]] = {name: [] for name in guards}
    for _ in range(args.requests):
        system = "You are the support assistant of a coffee shop. " + _text(rng, 300)
        user = f"Hi, I am {rng.choice(['ana', 'li'])}@mail.example.org, about order ORD-{rng.randint(100000, 999999)}. " + _text(rng, 400)  # fmt: skip
        texts = [system, _text(rng, 400), _text(rng, 300), user]
        chunks = _chunks(rng, _text(rng, 2000))
        base = _baseline(chunks)
        baseline.append(base)
        for name, guard in guards.items():
            added[name].append(_guarded(guard, texts, chunks, held[name], slowest[name]) - base)
    lookup = _lookup_times(args.requests)
    result: dict[str, Any] = {
        "requests": args.requests, "prompt_chars": 1500, "answer_chars": 2000, "chunk_chars": "1-6",
        "baseline": _summary(baseline), "settings_lookup": _summary(lookup),
    }  # fmt: skip
    for name in guards:
        result[name] = {
            "added": _summary(added[name]),
            "added_with_lookup_p95_ms": round(float(np.percentile(np.array(added[name]) * 1000, 95))
                                              + float(np.percentile(np.array(lookup) * 1000, 95)), 3),
            "slowest_chunk": _summary(slowest[name]),
            "held_chars": {"p50": float(np.percentile(held[name], 50)), "p95": float(np.percentile(held[name], 95)),
                           "max": int(max(held[name]))},
        }  # fmt: skip
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
