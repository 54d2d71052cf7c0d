"""The generation jobs waiting for a batch row, and which of them gets the next free row. No model.

Owns: the order jobs leave the queue in: round-robin over tenants (the tenant served least recently
goes first, so one tenant's flood cannot push another's request to the back), within a tenant
round-robin over its adapters (the base model counts as one; so one hot adapter cannot starve another),
and first come first served within one tenant's adapter. And the loaded-adapter limit without
starvation: the first turn whose adapter does not fit waits; the adapter that took its slot first,
once it has had `rows_per_slot` rows since, takes no new rows until it has drained and freed the slot;
every other turn goes on meanwhile. So the batch stays full, adapters take the slots in turn (each
fills up to `rows_per_slot` rows per turn instead of being swapped out after one), and the waiting
turn comes once those rows finish. Also: dropping cancelled jobs, expiring jobs that waited too long.
Does not own: the lock (the engine's), the queue bound, or telling a job what happened (see `engine`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping

from tunesmith.serve.jobs import GenerationJob


class PendingJobs:
    """Queued jobs by tenant, then adapter; not thread-safe (the engine calls it under its lock)."""

    def __init__(self, rows_per_slot: int) -> None:
        self.rows_per_slot = rows_per_slot  # rows an adapter takes after getting a slot before it may drain
        # tenant -> adapter (None: the base model) -> jobs in arrival order. Both levels are in turn
        # order: the first key is served next, a served key moves to the end, an emptied one leaves.
        self._queues: dict[str, dict[str | None, deque[GenerationJob]]] = {}
        self._count = 0
        # adapters with rows in the batch, in the order they took their slots (the first drains first),
        # and the rows each has taken since
        self._slots: dict[str, int] = {}

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
        its place and the active adapter that took its slot first among those that have had
        `rows_per_slot` rows since gets no new rows, so it drains; every other turn is taken as usual.
        """
        rows = Counter(active)
        self._slots = {adapter: taken for adapter, taken in self._slots.items() if adapter in rows}
        taken: list[GenerationJob] = []
        cancelled: list[GenerationJob] = []
        while len(taken) < limit:
            turn = self._next_turn(rows, capacity)
            if turn is None:
                break
            tenant, adapter = turn
            if self._queues[tenant][adapter][0].cancelled:  # not a turn: the tenant keeps its place
                cancelled.append(self._pop(tenant, adapter, served=False))
                continue
            if adapter is not None:
                self._slots[adapter] = self._slots.get(adapter, 0) + 1
                rows[adapter] += 1
            taken.append(self._pop(tenant, adapter, served=True))
        return taken, cancelled

    def _next_turn(self, rows: Mapping[str, int], capacity: int) -> tuple[str, str | None] | None:
        """The first (tenant, adapter) turn that may take a row now, if any."""
        waiting = False  # whether a turn before this one waits for a slot
        draining: str | None = None  # the adapter giving its slot up to that turn (if one may yet)
        for tenant, queues in self._queues.items():
            for adapter in queues:
                if adapter is None or (adapter in rows and adapter != draining):
                    return tenant, adapter
                if adapter not in rows:
                    if len(rows) < capacity:
                        return tenant, adapter
                    if not waiting:
                        waiting, draining = True, self._spent_slot()
        return None

    def _spent_slot(self) -> str | None:
        """The adapter that took its slot first among those that have had their rows since, if any."""
        return next((name for name, taken in self._slots.items() if taken >= self.rows_per_slot), None)

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
