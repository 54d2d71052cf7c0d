"""The generation jobs waiting for a batch row, and which of them gets the next free row. No model.

Owns: the order jobs leave the queue in: round-robin over tenants (the tenant served least recently
goes first, so one tenant's flood cannot push another's request to the back), within a tenant
round-robin over its adapters (the base model counts as one; so one hot adapter cannot starve another),
and first come first served within one tenant's adapter; the loaded-adapter limit, with no overtaking
across it (a job whose adapter does not fit stops the taking, so the adapters in use drain and its
adapter gets a slot, never waiting forever); dropping cancelled jobs and expiring jobs that waited too
long. Does not own: the lock (the engine's), the queue bound, or telling a job what happened (see
`engine`).
"""

from __future__ import annotations

from collections import deque

from tunesmith.serve.jobs import GenerationJob


class PendingJobs:
    """Queued jobs by tenant, then adapter; not thread-safe (the engine calls it under its lock)."""

    def __init__(self) -> None:
        # tenant -> adapter (None: the base model) -> jobs in arrival order. Both levels are in turn
        # order: the first key is served next, a served key moves to the end, an emptied one leaves.
        self._queues: dict[str, dict[str | None, deque[GenerationJob]]] = {}
        self._count = 0

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
        self, limit: int, adapters: set[str], capacity: int
    ) -> tuple[list[GenerationJob], list[GenerationJob]]:
        """Up to `limit` jobs in turn order, and the cancelled jobs dropped on the way.

        The distinct adapters of the jobs taken, with `adapters` (those already decoding), stay within
        `capacity`; at the first job whose adapter does not fit, taking stops.
        """
        taken: list[GenerationJob] = []
        cancelled: list[GenerationJob] = []
        adapters = set(adapters)
        while self._queues and len(taken) < limit:
            tenant, queues = next(iter(self._queues.items()))
            adapter, queue = next(iter(queues.items()))
            if queue[0].cancelled:  # not a turn: the tenant keeps its place
                cancelled.append(self._pop(tenant, adapter, served=False))
                continue
            if adapter is not None and adapter not in adapters:
                if len(adapters) >= capacity:
                    break
                adapters.add(adapter)
            taken.append(self._pop(tenant, adapter, served=True))
        return taken, cancelled

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
