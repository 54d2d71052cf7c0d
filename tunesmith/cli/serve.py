"""`tunesmith serve`: the OpenAI-compatible server for the base model and its LoRA adapters."""

from __future__ import annotations

from pathlib import Path

import typer

from tunesmith.cli.common import UsageError


def serve(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file with a `serve:` section; flags override it."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Base model: catalog name, Hugging Face id or directory."
    ),
    host: str | None = typer.Option(None, "--host", help="Interface to listen on (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", "-p", help="Port (default 8000)."),
    adapter: list[str] = typer.Option(
        [],
        "--adapter",
        "-a",
        help="NAME=PATH_OR_RUN_ID: register an adapter folder (or a run's adapter) and load it. Repeatable.",
    ),  # fmt: skip
    no_auth: bool = typer.Option(
        False,
        "--no-auth",
        help="Serve without API keys: anyone who can reach the port may call. Local use only.",
    ),
    max_batch_size: int | None = typer.Option(
        None, "--max-batch-size", help="Requests decoded together (16)."
    ),
    max_wait_ms: float | None = typer.Option(
        None, "--max-wait-ms", help="How long a request waits for others to batch with (10 ms)."
    ),
    max_loaded_adapters: int | None = typer.Option(
        None, "--max-loaded-adapters", help="Adapters kept in memory, least recently used evicted (8)."
    ),
    max_tokens_limit: int | None = typer.Option(
        None, "--max-tokens-limit", help="Largest max_tokens (1024)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for torch (default one per core; 1 on a busy shared CPU)."
    ),
) -> None:
    """Serve the base model once, with many LoRA adapters, behind the OpenAI API.

    Clients call `model="base"`, an adapter (`name` or `name@version` from the registry) or a
    deployment (A/B variants, see `tunesmith deploy`). Keys come from `tunesmith keys create`.

    Endpoints: /v1/models, /v1/chat/completions, /v1/completions, /v1/feedback, /admin/...,
    /health, /metrics. Ctrl-C finishes in-flight requests, then exits.

    Examples:
      tunesmith serve --adapter acme=runs/run-20261123-182501-3fa9 --no-auth
      tunesmith serve --config serve.yaml --port 9000
    """
    from tunesmith.config import build_serve_spec, load_config_file
    from tunesmith.serve.app import run_server

    adapters = {}
    for item in adapter:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise UsageError(f"--adapter {item}: expected NAME=PATH_OR_RUN_ID")
        adapters[name] = source
    section = load_config_file(config).serve if config else None
    spec = build_serve_spec(
        section,
        {
            "model": model, "host": host, "port": port, "adapters": adapters or None,
            "auth": False if no_auth else None, "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms,
            "max_loaded_adapters": max_loaded_adapters, "max_tokens_limit": max_tokens_limit, "threads": threads,
        },
    )  # fmt: skip
    run_server(spec)
