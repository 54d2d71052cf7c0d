"""`tunesmith loop`: the improvement loop of a deployment (run, status, approve, reject, cancel)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tunesmith.cli.common import UsageError, console, print_json

app = typer.Typer(
    help="The improvement loop: trigger, dataset, candidate, gate, canary, then promote or roll back."
)

_Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_Note = Annotated[str | None, typer.Option("--note", help="Why, in a few words (kept in the audit trail).")]


def _registry() -> Any:
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    return Registry(default_database_url()).connect()


@app.command("run")
def run(
    deployment: Annotated[
        str, typer.Option("--deployment", "-d", help="The deployment to improve.", show_default=False)
    ],
    policy: Annotated[
        Path, typer.Option("--policy", "-p", help="The loop policy file (loop.yaml).", show_default=False)
    ],
    until: Annotated[
        str | None, typer.Option("--until", help="Stop once the cycle reaches this state (e.g. gated).")
    ] = None,
    now: Annotated[bool, typer.Option("--now", help="Start a cycle even if no trigger fired.")] = False,
    every: Annotated[
        str | None, typer.Option("--every", help="Repeat, e.g. 1h, until interrupted (default: once).")
    ] = None,
    json_output: _Json = False,
) -> None:
    """Resume the deployment's open cycle from its last committed state, or start one if a trigger fires.

    A cycle builds the next dataset, trains a candidate, gates it against the champion, runs the canary,
    and promotes or rolls back. Every step is a registry state with an audit record; a killed run resumes.

    Examples:
      tunesmith loop run --deployment support --policy loop.yaml
      tunesmith loop run --deployment support --policy loop.yaml --every 1h   # or cron: 0 * * * *
    """
    import time

    from tunesmith.config import duration_seconds
    from tunesmith.loop.policy import load_policy
    from tunesmith.loop.run import run_loop
    from tunesmith.loop.states import LoopState

    if until is not None and until not in set(LoopState):
        raise UsageError(f"--until {until}: not a loop state; one of {', '.join(LoopState)}")
    try:
        pause = None if every is None else float(duration_seconds(every))
    except ValueError as error:
        raise UsageError(f"--every {error}") from error
    if pause is not None and pause <= 0:
        raise UsageError(f"--every {every}: give a positive duration, e.g. 1h")
    spec = load_policy(policy)
    registry = _registry()
    while True:
        outcome = run_loop(registry, deployment, spec, until=LoopState(until) if until else None, now=now)
        if json_output:
            print_json(outcome.to_dict())
        else:
            cycle = outcome.cycle
            if cycle is not None:
                console.print(f"[bold]loop {cycle.id}[/] {cycle.deployment}: {cycle.state}", highlight=False)
            console.print(outcome.note, highlight=False)
        if pause is None:
            return
        now = False  # --now starts one cycle, not one per pass
        time.sleep(pause)


@app.command("status")
def status(
    deployment: Annotated[
        str | None,
        typer.Option("--deployment", "-d", help="Only this deployment's cycles.", show_default=False),
    ] = None,
    loop_id: Annotated[
        int | None, typer.Argument(help="One cycle, with its history.", show_default=False)
    ] = None,
    json_output: _Json = False,
) -> None:
    """Cycles with their state, champion and candidate; with LOOP_ID, every state it entered and why."""
    from tunesmith.loop.run import loop_status

    cycles = loop_status(_registry(), deployment, loop_id)
    if json_output:
        print_json(cycles)
        return
    for cycle in cycles:
        console.print(
            f"{cycle['id']:>4}  {cycle['deployment']:<16} {cycle['state']:<18} {cycle['champion']} -> "
            f"{cycle['candidate'] or '-'}  {cycle['updated_at'][:19]}",
            highlight=False,
        )
        if cycle["reason"]:
            console.print(f"      {cycle['reason']}", highlight=False)
        if loop_id is not None:
            for event in cycle["history"]:
                console.print(
                    f"      {event['at'][:19]}  {event['state']:<18} {event['message']}", highlight=False
                )
    if not cycles:
        console.print("no loop cycles yet")


@app.command("approve")
def approve(
    loop_id: Annotated[int, typer.Argument(help="The cycle awaiting approval.", show_default=False)],
    note: _Note = None,
    json_output: _Json = False,
) -> None:
    """Approve a gated candidate: the next `loop run` starts its canary."""
    _decide(loop_id, True, note, json_output)


@app.command("reject")
def reject(
    loop_id: Annotated[int, typer.Argument(help="The cycle awaiting approval.", show_default=False)],
    note: _Note = None,
    json_output: _Json = False,
) -> None:
    """Reject a gated candidate: the cycle ends and the candidate never serves."""
    _decide(loop_id, False, note, json_output)


@app.command("cancel")
def cancel(
    loop_id: Annotated[int, typer.Argument(help="The open cycle to end.", show_default=False)],
    note: _Note = None,
    json_output: _Json = False,
) -> None:
    """End an open cycle by hand, e.g. one whose step keeps failing.

    Before its canary it is rejected; during it the champion gets all the traffic back and it is rolled
    back."""
    from tunesmith.loop.run import cancel_cycle

    cycle = cancel_cycle(_registry(), loop_id, note, None)
    if json_output:
        print_json(cycle.to_dict())
        return
    console.print(f"loop {cycle.id}: {cycle.state}", highlight=False)


def _decide(loop_id: int, approve: bool, note: str | None, json_output: bool) -> None:
    from tunesmith.loop.run import decide_approval

    cycle = decide_approval(_registry(), loop_id, approve, note, None)
    if json_output:
        print_json(cycle.to_dict())
        return
    console.print(f"loop {cycle.id}: {cycle.state}", highlight=False)
