"""Loop cycles on SQLite and PostgreSQL: a transition commits the state, its event and its audit record."""

from __future__ import annotations

from tunesmith.audit.trail import read_log, verify_registry
from tunesmith.registry.loop_store import LoopStore
from tunesmith.registry.store import Registry


def test_cycles_move_state_by_state_with_history_and_audit(database_url: str) -> None:
    registry = Registry(database_url).connect()
    store = LoopStore(registry)
    cycle = store.start("support", "voice@1", {"gate": {"metric": "rouge_l"}}, "triggered", {"feedback_id": 7},
                        "50 feedback items", open_states={"triggered", "canary"})  # fmt: skip
    moved = store.advance(cycle.id, "triggered", "canary", {"variants": []}, "canary", candidate="voice@2")
    ended = store.advance(cycle.id, "canary", "rolled_back", {}, "worse", reason="worse on thumbs")
    assert (moved.candidate, ended.state, ended.reason) == ("voice@2", "rolled_back", "worse on thumbs")
    assert ended.lineage == {"triggered": {"feedback_id": 7}, "canary": {"variants": []}, "rolled_back": {}}
    assert [event["state"] for event in store.history(cycle.id)] == ["triggered", "canary", "rolled_back"]
    second = store.start(
        "support", "voice@1", {}, "triggered", {}, "again", open_states={"triggered", "canary"}
    )
    assert [c.id for c in store.cycles("support")] == [cycle.id, second.id] and store.cycles("other") == []
    actions = [(r["action"], r["target"]) for r in read_log(registry) if r["target"].startswith("loop:")]
    assert actions == [("loop.triggered", f"loop:{cycle.id}"), ("loop.canary", f"loop:{cycle.id}"),
                       ("loop.rolled_back", f"loop:{cycle.id}"), ("loop.triggered", f"loop:{second.id}")]  # fmt: skip
    assert verify_registry(registry).bad_id is None
