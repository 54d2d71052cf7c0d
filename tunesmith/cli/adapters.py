"""`tunesmith adapters`: register adapters for serving and assign them to tenants."""

from __future__ import annotations

import typer
from rich.table import Table

from tunesmith.cli.common import console, print_json

app = typer.Typer(help="Adapters the server can load, and which tenant owns each.")


@app.command("register")
def register(
    name: str = typer.Argument(..., help="Name clients call (`name`, or `name@version`)."),
    source: str = typer.Argument(..., help="Adapter folder, or a run id / run folder with an adapter."),
    tenant: str | None = typer.Option(
        None, "--tenant", "-t", help="Tenant that owns the name (created if new)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Record an adapter as the next version of NAME (the same folder again keeps its version).

    Adapters made elsewhere (peft/TRL, Unsloth, LLaMA-Factory) are checked as tunesmith's own are when
    served: plain LoRA, trained on a base model that resolves here, every tensor fitting that model.
    """
    from tunesmith.config import default_database_url
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry
    from tunesmith.serve.adapters import check_adapter_folder

    adapter = ServingStore(Registry(default_database_url()).connect()).register_source(
        name, source, tenant=tenant, check=check_adapter_folder
    )
    if json_output:
        print_json(
            {"name": adapter.name, "version": adapter.version, "path": adapter.path, "tenant": adapter.tenant}
        )
        return
    console.print(f"registered {adapter.key} ({adapter.path}) for tenant {adapter.tenant or '-'}")


@app.command("list")
def list_adapters(json_output: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The latest version of every adapter name, with its owner."""
    from tunesmith.config import default_database_url
    from tunesmith.registry.serving_store import Caller, ServingStore
    from tunesmith.registry.store import Registry

    store = ServingStore(Registry(default_database_url()).connect())
    adapters = store.visible_adapters(Caller(tenant=None, is_admin=True))
    if json_output:
        print_json(
            [{"name": a.name, "version": a.version, "tenant": a.tenant, "path": a.path} for a in adapters]
        )
        return
    table = Table(title="adapters (latest versions)")
    for column in ("name", "version", "tenant", "path"):
        table.add_column(column)
    for a in adapters:
        table.add_row(a.name, str(a.version), a.tenant or "-", a.path)
    console.print(table)
