"""Which queued job gets the next free row: tenants in turn, a tenant's adapters in turn, no overtaking
across the loaded-adapter limit."""

from __future__ import annotations

from tunesmith.serve.jobs import GenerationJob
from tunesmith.serve.pending import PendingJobs


def _job(tenant: str, adapter: str | None, name: str, enqueued_at: float = 0.0) -> GenerationJob:
    return GenerationJob(
        prompt_ids=[1], adapter=adapter, adapter_path=None, max_tokens=1, temperature=0.0, top_p=1.0, seed=None,
        stop=[], sink=lambda event: None, tenant=tenant, request_id=name, enqueued_at=enqueued_at,
    )  # fmt: skip


def _names(jobs: list[GenerationJob]) -> list[str]:
    return [job.request_id for job in jobs]


def test_a_flooding_tenant_takes_turns_with_a_tenant_that_came_later() -> None:
    pending = PendingJobs()
    pending.add([_job("acme", None, f"acme{i}") for i in range(10)])
    pending.add([_job("globex", None, "globex0")])
    assert _names(pending.take(1, set(), capacity=4)[0]) == ["acme0"]
    assert _names(pending.take(1, set(), capacity=4)[0]) == ["globex0"]  # the next free row, not the 11th
    pending.add([_job("globex", None, "globex1"), _job("initech", None, "initech0")])
    taken, _ = pending.take(5, set(), capacity=4)
    assert _names(taken) == ["acme1", "globex1", "initech0", "acme2", "acme3"]
    assert len(pending) == 6


def test_a_hot_adapter_takes_turns_with_the_same_tenants_other_adapter() -> None:
    pending = PendingJobs()
    pending.add([_job("acme", "hot@1", f"hot{i}") for i in range(6)])
    pending.add([_job("acme", "cold@1", "cold0"), _job("acme", None, "base0")])
    taken, _ = pending.take(4, set(), capacity=4)
    assert _names(taken) == ["hot0", "cold0", "base0", "hot1"]


def test_an_adapter_that_does_not_fit_is_not_overtaken() -> None:
    """With the one adapter slot in use, the next turn's adapter stops the taking until that drains."""
    pending = PendingJobs()
    pending.add([_job("acme", "a@1", "a0"), _job("acme", "a@1", "a1"), _job("globex", "b@1", "b0")])
    assert _names(pending.take(1, set(), capacity=1)[0]) == ["a0"]
    assert pending.take(4, {"a@1"}, capacity=1)[0] == []  # b0's turn; a1 must not overtake it
    assert _names(pending.take(4, set(), capacity=1)[0]) == ["b0"]  # a@1 drained
    assert _names(pending.take(4, set(), capacity=1)[0]) == ["a1"]


def test_cancelled_jobs_are_dropped_and_old_ones_expire() -> None:
    pending = PendingJobs()
    cancelled = _job("acme", None, "gone", enqueued_at=5.0)
    cancelled.cancelled = True
    pending.add([_job("acme", None, "old", enqueued_at=1.0), cancelled, _job("globex", None, "new", 9.0)])
    assert pending.oldest() == 1.0
    assert _names(pending.expire(queued_before=2.0)) == ["old"]
    taken, dropped = pending.take(4, set(), capacity=4)
    assert _names(taken) == ["new"] and _names(dropped) == ["gone"] and len(pending) == 0
