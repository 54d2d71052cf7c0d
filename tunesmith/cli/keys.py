"""`tunesmith keys`: API keys for the server and the console, each mapped to a tenant (or admin), with an
account name and a role (admin, reviewer, viewer). Stored hashed."""

from __future__ import annotations

import typer
from rich.table import Table

from tunesmith.cli.common import console, print_json
from tunesmith.registry.serving_records import Role

app = typer.Typer(help="API keys for `tunesmith serve` (stored hashed; a key is shown once).")


@app.command("create")
def create_key(
    tenant: str | None = typer.Option(
        None, "--tenant", "-t", help="Tenant the key acts for (created if new)."
    ),
    admin: bool = typer.Option(
        False, "--admin", help="An admin key: admin endpoints, every tenant's models (same as --role admin)."
    ),
    name: str | None = typer.Option(
        None, "--name", "-n", help="The account's name (a reviewer's, shown in review progress)."
    ),
    role: Role | None = typer.Option(
        None,
        "--role",
        help="admin (everything), reviewer (judges its tenant's review tasks) or viewer (reads); "
        "default: admin with --admin, else viewer.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Create a key and print it once; only its hash is kept.

    Examples:
      tunesmith keys create --tenant acme
      tunesmith keys create --name alice --role reviewer --tenant acme
    """
    from tunesmith.config import default_database_url
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry

    store = ServingStore(Registry(default_database_url()).connect())
    key = store.create_key(tenant, admin=admin, role=role, name=name)
    granted = role or (Role.admin if admin else Role.viewer)
    if json_output:
        print_json({"key": key, "tenant": tenant, "admin": granted is Role.admin, "name": name,
                    "role": str(granted)})  # fmt: skip
        return
    console.print(f"{key}\n[dim]Shown once: store it now. Send it as 'Authorization: Bearer <key>'.[/]")


@app.command("list")
def list_keys(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Every key: id, prefix, name, role, tenant, admin, revoked."""
    from tunesmith.config import default_database_url
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry

    keys = ServingStore(Registry(default_database_url()).connect()).list_keys()
    if json_output:
        print_json(keys)
        return
    table = Table(title="API keys")
    for column in ("id", "prefix", "name", "role", "tenant", "admin", "revoked", "created"):
        table.add_column(column, no_wrap=True)
    for key in keys:
        table.add_row(str(key["id"]), key["prefix"], key["name"] or "-", key["role"] or "-", key["tenant"] or "-",
                      str(key["admin"]), str(key["revoked"]), key["created_at"][:19])  # fmt: skip
    console.print(table)


@app.command("revoke")
def revoke_key(key_id: int = typer.Argument(..., help="Key id from `tunesmith keys list`.")) -> None:
    """Revoke a key; requests with it get a 401 from then on."""
    from tunesmith.config import default_database_url
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry

    ServingStore(Registry(default_database_url()).connect()).revoke_key(key_id)
    console.print(f"revoked key {key_id}")
