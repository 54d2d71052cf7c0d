"""`tunesmith runs`: what the registry knows about training runs."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from tunesmith.cli.common import console, fail, print_json

app = typer.Typer(help="Training runs recorded in the registry.")


@app.command("list")
def list_runs(
    limit: int = typer.Option(50, "--limit", help="Most recent N runs."),
    json_output: bool = typer.Option(False, "--json", help="Print a JSON list."),
) -> None:
    """List recent runs, newest first: status, base model, tokens, losses."""
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    runs = Registry(default_database_url()).connect().list_runs(limit)
    if json_output:
        print_json(runs)
        return
    table = Table(title="runs, newest first (losses: train, val)")
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("method", no_wrap=True)
    for column in ("tokens", "train", "val"):
        table.add_column(column, justify="right", no_wrap=True)
    for run in runs:
        metrics = run["metrics"] or {}
        tokens = f"{run['trained_tokens']:,}" if run["trained_tokens"] else "-"
        table.add_row(
            run["id"],
            run["status"],
            run["method"],
            tokens,
            _fmt(metrics.get("train_loss")),
            _fmt(metrics.get("val_loss")),
        )
    console.print(table)


@app.command("show")
def show_run(
    run_id: str = typer.Argument(..., help="Run id (a unique prefix is enough)."),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Everything recorded about one run: config, lineage, events, adapters, evaluations."""
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    run = Registry(default_database_url()).connect().get_run(run_id)
    if run is None:
        fail(f"{run_id}: no such run in the registry")
    if json_output:
        print_json(run)
        return
    console.print(f"[bold]{run['id']}[/]  {run['status']}  ({run['method']} on {run['base_model']})")
    console.print(f"folder: {run['run_dir']}")
    console.print(f"data: {run['dataset_id']}  val: {run['val_dataset_id']}")
    console.print(f"tokens: {run['trained_tokens']}  wall: {run['wall_seconds']}s  metrics: {run['metrics']}")
    for adapter in run["adapters"]:
        console.print(f"adapter: {adapter['name']}@{adapter['version']}  {adapter['path']}")
    for evaluation in run["evaluations"]:
        _print_evaluation(evaluation)
    for event in run["events"]:
        console.print(
            f"  {event['created_at'][:19]}  {event['type']:<16} {event['message']}", highlight=False
        )


def _print_evaluation(evaluation: dict[str, Any]) -> None:
    """One line per evaluation; a gate verdict adds a line per check (its margin, interval and p)."""
    if evaluation["kind"] != "gate":
        console.print(f"{evaluation['kind']} {evaluation['id']}: {evaluation['out_dir']}", highlight=False)
        return
    verdict = "[green]passed[/]" if evaluation["passed"] else "[red]failed[/]"
    console.print(
        f"gate {evaluation['id']}: {verdict} on evaluation {evaluation['evaluation_id']}", highlight=False
    )
    for check in evaluation["checks"]:
        console.print(f"  {'✓' if check['passed'] else '✗'} {check['line']}", highlight=False)


def _fmt(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"
