"""`tunesmith logs`: the request log's privacy: how much text each tenant's log keeps, and retention."""

from __future__ import annotations

from typing import Annotated

import typer

from tunesmith.audit.privacy import RequestLogMode
from tunesmith.cli.common import UsageError, console, print_json

app = typer.Typer(help="The request log: per-tenant text logging (off/redacted/full) and purging old rows.")


@app.command("mode")
def set_mode(
    tenant: Annotated[str, typer.Argument(help="Tenant whose request log this sets.")],
    mode: Annotated[
        RequestLogMode, typer.Argument(help="off: no text; redacted: PII replaced (default); full.")
    ],
) -> None:
    """Set how much prompt and output text a tenant's request log keeps."""
    from tunesmith.config import default_database_url
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry

    ServingStore(Registry(default_database_url()).connect()).set_request_logging(tenant, mode)
    console.print(f"tenant {tenant}: request log {mode}")


@app.command("purge")
def purge(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Delete logged requests older than this, e.g. 30d.")
    ],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delete old logged requests with the feedback and outcome events on them (see the README)."""
    from tunesmith.config import default_database_url, duration_seconds
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry

    try:
        seconds = float(duration_seconds(older_than))
    except ValueError as error:
        raise UsageError(f"--older-than {error}") from error
    counts = ServingStore(Registry(default_database_url()).connect()).purge_requests(seconds)
    if json_output:
        print_json(counts)
        return
    console.print(
        "purged: " + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items())
    )
