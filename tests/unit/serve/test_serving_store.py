from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tunesmith.config import ConfigError
from tunesmith.registry.serving_store import Caller, NotFoundError, Role, ServingStore, choose_variant

ACME = Caller(tenant="acme", is_admin=False)
GLOBEX = Caller(tenant="globex", is_admin=False)
ADMIN = Caller(tenant=None, is_admin=True)


def test_keys_are_stored_hashed_map_to_tenants_and_can_be_revoked(
    store: ServingStore, tmp_path: Path
) -> None:
    key = store.create_key("acme", admin=False)
    admin_key = store.create_key(None, admin=True)
    assert store.authenticate(key) == Caller("acme", False, 1, role=Role.viewer)  # the id: audit actor
    assert store.authenticate(admin_key) == Caller(None, True, 2, role=Role.admin)
    assert store.authenticate(key + "x") is None
    dump = "\n".join(sqlite3.connect(tmp_path / "registry.db").iterdump())
    assert key not in dump and key[10:] not in dump  # only the hash and a short prefix are kept
    store.revoke_key(store.list_keys()[0]["id"])
    assert store.authenticate(key) is None
    with pytest.raises(ConfigError, match="--tenant"):
        store.create_key(None, admin=False)


def test_tenants_see_only_their_adapters_and_versions_resolve(store: ServingStore, tmp_path: Path) -> None:
    first = store.register_adapter("voice", tmp_path / "v1", "base", tenant="acme")
    second = store.register_adapter("voice", tmp_path / "v2", "base", tenant="acme")
    again = store.register_adapter("voice", tmp_path / "v2", "base", tenant="acme")
    store.register_adapter("other", tmp_path / "o1", "base", tenant="globex")
    assert (first.key, second.key, again.key) == ("voice@1", "voice@2", "voice@2")
    assert store.find_adapter(ACME, "voice", None).key == "voice@2"
    assert store.find_adapter(ACME, "voice", 1).path == str(tmp_path / "v1")
    with pytest.raises(NotFoundError):
        store.find_adapter(GLOBEX, "voice", None)  # exists, but not globex's: the same error as missing
    with pytest.raises(NotFoundError):
        store.find_adapter(ACME, "voice", 7)
    assert [a.name for a in store.visible_adapters(ACME)] == ["voice"]
    assert [a.name for a in store.visible_adapters(ADMIN)] == ["other", "voice"]
    with pytest.raises(ConfigError, match="another tenant"):
        store.register_adapter("voice", tmp_path / "x", "base", tenant="globex")


def test_variant_choice_is_sticky_per_user_and_follows_the_weights() -> None:
    variants = [{"model": "a@1", "weight": 90.0}, {"model": "a@2", "weight": 10.0}]
    picks = [choose_variant("dep", f"user-{i}", variants) for i in range(4000)]
    assert picks == [choose_variant("dep", f"user-{i}", variants) for i in range(4000)]
    assert 0.07 < picks.count("a@2") / len(picks) < 0.13
    assert {choose_variant("dep", None, variants) for _ in range(200)} == {"a@1", "a@2"}


def test_deployment_weights_promote_and_rollback_are_recorded(store: ServingStore, tmp_path: Path) -> None:
    store.register_adapter("voice", tmp_path / "v1", "base", tenant="acme")
    store.register_adapter("voice", tmp_path / "v2", "base", tenant="acme")
    store.register_adapter("theirs", tmp_path / "t", "base", tenant="globex")
    store.create_deployment("acme-voice", [{"model": "voice@1", "weight": 90}, {"model": "voice", "weight": 10}],
                            tenant="acme")  # fmt: skip
    deployment = store.find_deployment(ACME, "acme-voice")
    assert deployment is not None
    assert [v["model"] for v in deployment["variants"]] == [
        "voice@1",
        "voice@2",
    ]  # a bare name pins the latest
    assert store.find_deployment(GLOBEX, "acme-voice") is None
    store.promote("acme-voice", "voice@2")
    store.rollback("acme-voice")
    deployment = store.find_deployment(ADMIN, "acme-voice")
    assert deployment is not None
    assert [c["action"] for c in deployment["history"]] == ["create", "promote", "rollback"]
    assert deployment["variants"] == deployment["history"][0]["variants"]
    with pytest.raises(ConfigError, match="no such adapter"):
        store.set_weights("acme-voice", [{"model": "theirs", "weight": 1}])
    with pytest.raises(ConfigError, match="not all be 0"):
        store.set_weights("acme-voice", [{"model": "voice@1", "weight": 0}])
    with pytest.raises(NotFoundError):
        store.promote("nope", "voice@1")
