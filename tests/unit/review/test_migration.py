"""Migration 0007 on a registry with keys: admin keys become admins, the others viewers; down and up again."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from tunesmith.registry.serving_records import Role
from tunesmith.registry.serving_store import ServingStore, hash_key
from tunesmith.registry.store import Registry


def test_keys_made_before_roles_get_admin_or_viewer(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    Registry(url).connect()
    config = Config()
    config.set_main_option("script_location", "tunesmith.registry:migrations")
    engine = create_engine(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0006")
        assert "review_tasks" not in inspect(connection).get_table_names()
        assert "role" not in {column["name"] for column in inspect(connection).get_columns("api_keys")}
        connection.execute(text("INSERT INTO tenants (name, created_at) VALUES ('acme', '2026-01-01')"))
        for key, tenant, admin in (("old-admin", None, True), ("old-tenant", "acme", False)):
            connection.execute(
                text("INSERT INTO api_keys (key_hash, prefix, tenant, is_admin, revoked, created_at) "
                     "VALUES (:hash, 'old', :tenant, :admin, 0, '2026-01-01')"),
                {"hash": hash_key(key), "tenant": tenant, "admin": admin},
            )  # fmt: skip
    engine.dispose()
    store = ServingStore(Registry(url).connect())  # connecting migrates to the head again
    admin, tenant = store.authenticate("old-admin"), store.authenticate("old-tenant")
    assert admin is not None and admin.role is Role.admin and admin.is_admin
    assert tenant is not None and tenant.role is Role.viewer and tenant.name is None
    assert [key["role"] for key in store.list_keys()] == ["admin", "viewer"]
