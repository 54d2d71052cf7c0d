"""How the engine's admission packs its batch, without a model: the shipped queue against plain FIFO.

One command:  .venv/bin/python benchmarks/serve_queue_policy.py [--steps 20000] [--capacity 2]

A simulated decode loop with `--batch` rows: each step every row moves one token, a row finishes after
a random 4-16 tokens, and free rows are filled from the queue at every step, as `engine` does. 64
closed-loop clients (each sends its next request when the last one finishes) belong to 3 tenants;
every fourth request of a tenant goes to the base model, the others to the tenant's own adapter;
`--capacity` adapters fit at once. `PendingJobs` (tenants and adapters in turn; an adapter waiting
for a slot drains the oldest slot) is compared with the queue before it: first come first served,
stopping at the first job whose adapter does not fit. Figures: requests finished, rows per step,
requests finished per adapter, adapter loads, and steps waited in the queue (p50, max). Deterministic
for a seed; a few seconds. See benchmarks/RESULTS.md, "Serving under abuse and load".
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter, deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunesmith.serve.jobs import GenerationJob
from tunesmith.serve.pending import PendingJobs

TENANTS = ("acme", "globex", "initech")


class Queue(Protocol):
    def add(self, jobs: list[GenerationJob]) -> None: ...

    def take(
        self, limit: int, active: Mapping[str, int], capacity: int
    ) -> tuple[list[GenerationJob], list[GenerationJob]]: ...


class FirstComeFirstServed:
    """The queue before `PendingJobs`: arrival order, stopping at the first adapter that does not fit."""

    def __init__(self) -> None:
        self.jobs: deque[GenerationJob] = deque()

    def add(self, jobs: list[GenerationJob]) -> None:
        self.jobs.extend(jobs)

    def take(
        self, limit: int, active: Mapping[str, int], capacity: int
    ) -> tuple[list[GenerationJob], list[GenerationJob]]:
        taken: list[GenerationJob] = []
        adapters = set(active)
        while self.jobs and len(taken) < limit:
            job = self.jobs[0]
            if job.adapter is not None and job.adapter not in adapters:
                if len(adapters) >= capacity:
                    break
                adapters.add(job.adapter)
            taken.append(self.jobs.popleft())
        return taken, []


def simulate(queue: Queue, steps: int, batch_size: int, capacity: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    sent = 0
    now = 0

    def request(tenant: str) -> GenerationJob:
        nonlocal sent
        sent += 1
        return GenerationJob(
            prompt_ids=[0], adapter=f"{tenant}-bot" if sent % 4 else None, adapter_path=None, max_tokens=16,
            temperature=0.0, top_p=1.0, seed=None, stop=[], sink=lambda event: None, tenant=tenant,
            enqueued_at=now,
        )  # fmt: skip

    rows: list[tuple[GenerationJob, int]] = []  # (job, tokens left)
    loaded: list[str] = []  # least recently loaded first
    finished: Counter[str] = Counter()
    loads, row_steps, waits = 0, 0, []
    queue.add([request(TENANTS[client % len(TENANTS)]) for client in range(64)])
    for now in range(steps):
        active = Counter(job.adapter for job, _ in rows if job.adapter is not None)
        taken, _ = queue.take(batch_size - len(rows), active, capacity)
        pinned = set(active) | {job.adapter for job in taken if job.adapter is not None}
        for job in taken:
            if job.adapter is not None and job.adapter not in loaded:
                loads += 1
                while len(loaded) >= capacity:
                    loaded.remove(next(name for name in loaded if name not in pinned))
                loaded.append(job.adapter)
            rows.append((job, rng.randint(4, 16)))
            waits.append(now - job.enqueued_at)
        row_steps += len(rows)
        rows = [(job, left - 1) for job, left in rows]
        for job, left in rows:
            if left == 0:  # done: its client sends the next request
                finished[job.adapter or "base"] += 1
                queue.add([request(job.tenant)])
        rows = [(job, left) for job, left in rows if left > 0]
    waits.sort()
    return {
        "finished": sum(finished.values()), "rows_per_step": round(row_steps / steps, 2),
        "finished_per_model": dict(sorted(finished.items())), "adapter_loads": loads,
        "wait_steps_p50": waits[len(waits) // 2], "wait_steps_max": waits[-1],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=16, help="Rows per batch (max_batch_size).")
    parser.add_argument("--capacity", type=int, default=2, help="Adapters loaded at once.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    figures = {
        name: simulate(queue, args.steps, args.batch, args.capacity, args.seed)
        for name, queue in (
            ("fifo", FirstComeFirstServed()),
            ("shipped", PendingJobs(rows_per_slot=args.batch)),
        )
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
