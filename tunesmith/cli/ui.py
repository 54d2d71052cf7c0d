"""`tunesmith ui`: the web console over the registry (runs, datasets, evaluations, deployments, reviews)."""

from __future__ import annotations

import typer

from tunesmith.cli.common import print_json


def ui(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(8600, "--port", "-p", min=0, max=65535, help="Port to listen on."),
    auth: bool = typer.Option(
        True, "--auth/--no-auth",
        help="Sign in with an API key (`tunesmith keys create`). --no-auth: you alone, as admin, on this "
        "machine only (loopback host).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the console's address as JSON, then serve."),
) -> None:  # fmt: skip
    """Open the web console: runs and their curves, comparisons, datasets, evaluations with examples side
    by side, deployments with promote/rollback, and the human review queue.

    Everything is served from this machine (no CDN). Stop with Ctrl-C.

    Examples:
      tunesmith ui --no-auth                       # then open http://127.0.0.1:8600
      tunesmith ui --host 0.0.0.0 --port 9000      # others sign in with their API keys
    """
    from tunesmith.ui.app import check_host, run_ui

    check_host(host, auth=auth)
    url = f"http://{host}:{port}/"
    if json_output:
        print_json({"url": url, "auth": auth})
    else:
        typer.echo(
            f"tunesmith console at {url} ({'sign in with an API key' if auth else 'no auth: local only'})"
        )
    run_ui(host, port, auth=auth)
