"""The generation jobs waiting for a batch row, and which of them gets the next free row. No model.

Owns: the order jobs leave the queue in: round-robin over tenants (the tenant served least recently
goes first, so one tenant's flood cannot push another's request to the back), within a tenant
round-robin over its adapters (the base model counts as one; so one hot adapter cannot starve another),
and first come first served within one tenant's adapter; the loaded-adapter limit without starvation:
the first turn whose adapter does not fit waits, and the adapter that has held its slot longest takes
no new rows until it has drained and freed the slot, while every other turn goes on (so the batch
stays full, the waiting adapter's turn comes once that adapter's rows finish, and adapters take the
slots in turn); dropping cancelled jobs and expiring jobs that waited too long. Does not own: the lock (the engine's), the queue bound, or telling
a job what happened (see `engine`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping

from tunesmith.serve.jobs import GenerationJob


class PendingJobs:
    """Queued jobs by tenant, then adapter; not thread-safe (the engine calls it under its lock)."""

    def __init__(self) -> None:
        # tenant -> adapter (None: the base model) -> jobs in arrival order. Both levels are in turn
        # order: the first key is served next, a served key moves to the end, an emptied one leaves.
        self._queues: dict[str, dict[str | None, deque[GenerationJob]]] = {}
        self._count = 0
        # adapters with rows in the batch, in the order they took their slots (the first drains first)
        self._slots: dict[str, None] = {}

    def __len__(self) -> int:
        return self._count

    def add(self, jobs: list[GenerationJob]) -> None:
        for job in jobs:
            self._queues.setdefault(job.tenant, {}).setdefault(job.adapter, deque()).append(job)
        self._count += len(jobs)

    def oldest(self) -> float:
        """When the job that has waited longest was queued (`enqueued_at`); the queue must not be empty."""
        return min(queue[0].enqueued_at for queues in self._queues.values() for queue in queues.values())

    def take(
        self, limit: int, active: Mapping[str, int], capacity: int
    ) -> tuple[list[GenerationJob], list[GenerationJob]]:
        """Up to `limit` jobs in turn order, and the cancelled jobs dropped on the way.

        `active` holds the adapters with rows in the batch and how many each; with the jobs taken, the
        distinct adapters stay within `capacity`. When a turn's adapter does not fit, that turn keeps
        its place and the active adapter that took its slot first gets no new rows, so it drains; every
        other turn is taken as usual meanwhile.
        """
        rows = Counter(active)
        self._slots = {adapter: None for adapter in self._slots if adapter in rows}  # drained ones left
        taken: list[GenerationJob] = []
        cancelled: list[GenerationJob] = []
        draining: str | None = None  # the adapter freeing its slot for a waiting turn
        while len(taken) < limit:
            turn, draining = self._next_turn(rows, capacity, draining)
            if turn is None:
                break
            tenant, adapter = turn
            if self._queues[tenant][adapter][0].cancelled:  # not a turn: the tenant keeps its place
                cancelled.append(self._pop(tenant, adapter, served=False))
                continue
            if adapter is not None:
                self._slots.setdefault(adapter, None)
                rows[adapter] += 1
            taken.append(self._pop(tenant, adapter, served=True))
        return taken, cancelled

    def _next_turn(
        self, rows: Mapping[str, int], capacity: int, draining: str | None
    ) -> tuple[tuple[str, str | None] | None, str | None]:
        """The first (tenant, adapter) turn that may take a row now, and the adapter draining (if any)."""
        for tenant, queues in self._queues.items():
            for adapter in queues:
                if adapter is None or (adapter in rows and adapter != draining):
                    return (tenant, adapter), draining
                if adapter not in rows:
                    if len(rows) < capacity:
                        return (tenant, adapter), draining
                    if draining is None:  # the first turn that does not fit waits for the oldest slot
                        draining = next(name for name in self._slots if name in rows)
        return None, draining

    def expire(self, queued_before: float) -> list[GenerationJob]:
        """Remove and return the jobs queued before `queued_before` (monotonic time)."""
        expired: list[GenerationJob] = []
        for tenant, queues in list(self._queues.items()):
            for adapter, queue in list(queues.items()):
                expired += [job for job in queue if job.enqueued_at < queued_before]
                queue = deque(job for job in queue if job.enqueued_at >= queued_before)
                if queue:
                    queues[adapter] = queue
                else:
                    del queues[adapter]
            if not queues:
                del self._queues[tenant]
        self._count -= len(expired)
        return expired

    def _pop(self, tenant: str, adapter: str | None, *, served: bool) -> GenerationJob:
        """The first job of `tenant`'s `adapter` queue; if `served`, both move to the end of their turns."""
        queues = self._queues[tenant]
        job = queues[adapter].popleft()
        self._count -= 1
        if served:
            queues[adapter] = queues.pop(adapter)
            self._queues[tenant] = self._queues.pop(tenant)
        if not queues[adapter]:
            del queues[adapter]
        if not queues:
            del self._queues[tenant]
        return job
