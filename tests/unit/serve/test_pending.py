"""Which queued job gets the next free row: tenants in turn, a tenant's adapters in turn, and an adapter
waiting for a slot gets one without stopping the others."""

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
    pending = PendingJobs(rows_per_slot=1)
    pending.add([_job("acme", None, f"acme{i}") for i in range(10)])
    pending.add([_job("globex", None, "globex0")])
    assert _names(pending.take(1, {}, capacity=4)[0]) == ["acme0"]
    assert _names(pending.take(1, {}, capacity=4)[0]) == ["globex0"]  # the next free row, not the 11th
    pending.add([_job("globex", None, "globex1"), _job("initech", None, "initech0")])
    taken, _ = pending.take(5, {}, capacity=4)
    assert _names(taken) == ["acme1", "globex1", "initech0", "acme2", "acme3"]
    assert len(pending) == 6


def test_a_hot_adapter_takes_turns_with_the_same_tenants_other_adapter() -> None:
    pending = PendingJobs(rows_per_slot=1)
    pending.add([_job("acme", "hot@1", f"hot{i}") for i in range(6)])
    pending.add([_job("acme", "cold@1", "cold0"), _job("acme", None, "base0")])
    taken, _ = pending.take(4, {}, capacity=4)
    assert _names(taken) == ["hot0", "cold0", "base0", "hot1"]


def test_an_adapter_waiting_for_a_slot_drains_the_oldest_slot_while_other_turns_go_on() -> None:
    """Two slots held by a@1 (first) and b@1; initech's c@1 waits: a@1 takes no new rows, b@1 and the
    base model do; once a@1 has drained, c@1 takes its slot and b@1 is next to drain for a@1."""
    pending = PendingJobs(rows_per_slot=1)
    pending.add([_job("acme", "a@1", f"a{i}") for i in range(3)])
    pending.add([_job("globex", "b@1", f"b{i}") for i in range(3)])
    pending.add([_job("initech", "c@1", "c0"), *[_job("hooli", None, f"base{i}") for i in range(3)]])
    assert _names(pending.take(2, {}, capacity=2)[0]) == ["a0", "b0"]
    taken, _ = pending.take(8, {"a@1": 1, "b@1": 1}, capacity=2)
    assert _names(taken) == ["base0", "b1", "base1", "b2", "base2"]  # a1 is held back, c0 waits
    assert _names(pending.take(8, {"a@1": 1, "b@1": 3}, capacity=2)[0]) == []
    assert _names(pending.take(8, {"b@1": 3}, capacity=2)[0]) == ["c0"]  # a@1 drained: its slot
    assert _names(pending.take(8, {"b@1": 3, "c@1": 1}, capacity=2)[0]) == []  # a1 waits; b@1 drains
    assert _names(pending.take(8, {"c@1": 1}, capacity=2)[0]) == ["a1", "a2"]


def test_an_adapter_takes_rows_per_slot_rows_before_it_gives_its_slot_up() -> None:
    """One slot, a@1 in it; b@1 waits. With 3 rows per slot a@1 takes a1 and a2 first, then drains."""
    pending = PendingJobs(rows_per_slot=3)
    pending.add([_job("acme", "a@1", f"a{i}") for i in range(5)])
    pending.add([_job("globex", "b@1", "b0")])
    assert _names(pending.take(1, {}, capacity=1)[0]) == ["a0"]
    assert _names(pending.take(4, {"a@1": 1}, capacity=1)[0]) == ["a1", "a2"]  # b0 waits meanwhile
    assert pending.take(4, {"a@1": 3}, capacity=1)[0] == []  # a@1 has had its rows: it drains
    assert _names(pending.take(4, {}, capacity=1)[0]) == ["b0"]
    assert pending.take(4, {"b@1": 1}, capacity=1)[0] == []  # b@1 has no more requests, a@1 waits
    assert _names(pending.take(4, {}, capacity=1)[0]) == ["a3", "a4"]


def test_cancelled_jobs_are_dropped_and_old_ones_expire() -> None:
    pending = PendingJobs(rows_per_slot=1)
    cancelled = _job("acme", None, "gone", enqueued_at=5.0)
    cancelled.cancelled = True
    pending.add([_job("acme", None, "old", enqueued_at=1.0), cancelled, _job("globex", None, "new", 9.0)])
    assert pending.oldest() == 1.0
    assert _names(pending.expire(queued_before=2.0)) == ["old"]
    taken, dropped = pending.take(4, {}, capacity=4)
    assert _names(taken) == ["new"] and _names(dropped) == ["gone"] and len(pending) == 0
