"""`tunesmith guardrails`: the guardrails of a deployment, an adapter or `base`, and what they did.

Settings stored here replace a server's config-file guardrails for the same target; a running server
applies them from its next request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tunesmith.cli.common import console, fail, print_json

app = typer.Typer(
    help="Guardrails per deployment or adapter: PII, blocklists, patterns, topics, lengths, classifier."
)

_Target = Annotated[
    str, typer.Argument(help="A deployment, an adapter name (every version) or `base`.", show_default=False)
]
_Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _store() -> Any:
    from tunesmith.config import default_database_url
    from tunesmith.registry.guardrail_store import GuardrailStore
    from tunesmith.registry.store import Registry

    return GuardrailStore(Registry(default_database_url()).connect())


def _print_spec(target: str, spec: dict[str, Any]) -> None:
    import yaml

    console.print(f"[bold]{target}[/]")
    console.print(yaml.safe_dump(spec, sort_keys=False).rstrip(), highlight=False, markup=False)


@app.command("show")
def show(target: _Target, json_output: _Json = False) -> None:
    """Print a target's stored guardrails (a server's config-file ones are in its config)."""
    spec = _store().get(target)
    if spec is None:
        fail(f"{target} has no stored guardrails (see `tunesmith guardrails list`)")
    if json_output:
        print_json({"target": target, "spec": spec})
        return
    _print_spec(target, spec)


@app.command("set")
def set_guardrails(
    target: _Target,
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="YAML file of the guardrails (keys: see the README's Guardrails).",
            exists=True,
            dir_okay=False,
        ),
    ],  # fmt: skip
    json_output: _Json = False,
) -> None:
    """Store a target's guardrails from a YAML file, replacing any (checked first: a bad regex is named)."""
    import yaml
    from pydantic import ValidationError

    from tunesmith.config import ConfigError, GuardrailSpec, format_validation_error

    try:
        raw = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{config}: cannot read guardrails: {error}") from error
    try:
        spec = GuardrailSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=str(config))) from error
    stored = _store().set(target, spec)
    if json_output:
        print_json({"target": target, "spec": stored})
        return
    _print_spec(target, stored)
    console.print("stored; a running server applies it from its next request")


@app.command("clear")
def clear(target: _Target) -> None:
    """Remove a target's stored guardrails (a server's config-file ones, if any, apply again)."""
    _store().clear(target)
    console.print(f"{target}: stored guardrails removed")


@app.command("list")
def list_targets(json_output: _Json = False) -> None:
    """List the targets with stored guardrails."""
    rows = _store().list_targets()
    if json_output:
        print_json(rows)
        return
    if not rows:
        console.print("no stored guardrails")
    for row in rows:
        console.print(f"{row['target']:<32} updated {row['updated_at']}")


@app.command("events")
def events(
    target: Annotated[str | None, typer.Option("--target", help="Only this target's guardrails.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="How many, newest first.")] = 50,
    json_output: _Json = False,
) -> None:
    """The latest guardrail actions: request id, guard, action and reason (never the matched text)."""
    rows = _store().list_events(target, limit)
    if json_output:
        print_json(rows)
        return
    for row in rows:
        console.print(
            f"{row['at']}  {row['request_id']}  {row['target']}  {row['direction']:<6} {row['guard']:<10} "
            f"{row['action']:<6} {row['reason']}",
            highlight=False,
        )
