"""`tunesmith audit`: read and verify the hash-chained audit trail of state-changing actions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tunesmith.cli.common import UsageError, console, print_json

app = typer.Typer(help="The audit trail: who changed what, when (hash-chained, tamper-evident).")


@app.command("log")
def audit_log(
    since: Annotated[
        str | None, typer.Option("--since", help="Only records this recent, e.g. 7d or 12h (default: all).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every record, oldest first: id, time, actor, action, target, before and after."""
    from tunesmith.audit.trail import read_log
    from tunesmith.config import default_database_url, duration_seconds
    from tunesmith.registry.store import Registry

    try:
        age = None if since is None else float(duration_seconds(since))
    except ValueError as error:
        raise UsageError(f"--since {error}") from error
    records = read_log(Registry(default_database_url()).connect(), age)
    if json_output:
        print_json(records)
        return
    for r in records:
        change = json.dumps({"before": r["before"], "after": r["after"]}, sort_keys=True)
        console.print(f"{r['id']:>5} {r['created_at'][:19]} {r['actor']} {r['action']} {r['target']} {change}",
                      markup=False, highlight=False)  # fmt: skip


@app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 naming the first record that was edited or deleted."""
    from tunesmith.audit.trail import verify_registry
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    result = verify_registry(Registry(default_database_url()).connect())
    if result.bad_id is not None:
        console.print(f"audit trail broken at record {result.bad_id}: {result.reason}", markup=False)
        raise typer.Exit(1)
    console.print(f"audit trail intact: {result.records} records")
