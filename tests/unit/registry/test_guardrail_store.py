"""Guardrail settings and actions in the registry, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from tunesmith.audit.trail import read_log, verify_registry
from tunesmith.config import GuardrailSpec
from tunesmith.registry.guardrail_store import GuardrailStore
from tunesmith.registry.serving_store import NotFoundError, ServingStore
from tunesmith.registry.store import Registry


def test_settings_are_stored_replaced_cleared_and_audited(database_url: str) -> None:
    registry = Registry(database_url).connect()
    store = GuardrailStore(registry)
    ServingStore(registry).create_deployment("shop", [{"model": "base", "weight": 1}], tenant=None)
    spec = GuardrailSpec.model_validate({"pii": {"output": "block"}, "max_output_chars": 100})
    store.set("shop", spec)
    store.set("base", GuardrailSpec())
    store.set("shop", spec.model_copy(update={"max_output_chars": 50}))
    assert store.find(["shop", "base", "other"]).keys() == {"shop", "base"}
    stored = store.get("shop")
    assert stored is not None and GuardrailSpec.model_validate(stored).max_output_chars == 50
    store.clear("shop")
    assert store.get("shop") is None and [row["target"] for row in store.list_targets()] == ["base"]
    actions = [(row["action"], row["target"]) for row in read_log(registry)]
    assert actions[-4:] == [("guardrails.set", "shop"), ("guardrails.set", "base"), ("guardrails.set", "shop"),
                            ("guardrails.clear", "shop")]  # fmt: skip
    assert read_log(registry)[-2]["before"]["spec"]["max_output_chars"] == 100
    assert verify_registry(registry).bad_id is None
    with pytest.raises(NotFoundError, match="no deployment or adapter named nope"):
        store.set("nope", spec)
    with pytest.raises(NotFoundError, match="classifier.adapter: no adapter named mod"):
        store.set("base", GuardrailSpec.model_validate(
            {"classifier": {"adapter": "mod", "labels": ["ok", "bad"], "blocked_labels": ["bad"]}}))  # fmt: skip
    with pytest.raises(NotFoundError, match="no stored guardrails"):
        store.clear("shop")


def test_actions_are_logged_with_their_request_and_listed_newest_first(database_url: str) -> None:
    store = GuardrailStore(Registry(database_url).connect())
    store.record_events(
        "r1", "base", [{"direction": "input", "guard": "pii", "action": "redact", "reason": "EMAIL"}]
    )
    store.record_events("r2", "shop", [{"direction": "output", "guard": "terms", "action": "block", "reason": "blocklist"}])  # fmt: skip
    assert [e["request_id"] for e in store.list_events()] == ["r2", "r1"]
    assert [e["reason"] for e in store.list_events("base")] == ["EMAIL"]
