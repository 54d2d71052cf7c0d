"""`tunesmith models`: the base-model catalog."""

from __future__ import annotations

import typer
from rich.table import Table

from tunesmith.cli.common import console, print_json

app = typer.Typer(
    help="Base models tunesmith knows by name. Any Hugging Face id or local directory also works."
)


@app.command("list")
def list_models(
    json_output: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show the model catalog and which models are ready on this machine."""
    from tunesmith.models.catalog import load_catalog

    entries = [
        {
            "name": m.name,
            "source": m.source,
            "hub_id": m.hub_id,
            "parameters": m.parameters,
            "context_length": m.context_length,
            "license": m.license,
            "local": m.is_available(),
            "notes": m.notes,
        }
        for m in load_catalog()
    ]
    if json_output:
        print_json(entries)
        return
    table = Table(title="tunesmith model catalog")
    table.add_column("name", no_wrap=True)
    for column in ("source", "parameters", "context", "local"):
        table.add_column(column, no_wrap=True)
    table.add_column("notes")
    for e in entries:
        local = "yes" if e["local"] else "-"
        table.add_row(
            str(e["name"]),
            str(e["source"]),
            str(e["parameters"]),
            f"{e['context_length']:,}",
            local,
            str(e["notes"]),
        )
    console.print(table)
