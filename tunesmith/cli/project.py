"""`tunesmith init`, `tunesmith run` and `tunesmith status`: a project folder made from a template, and its
pipeline run stage by stage with a cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from tunesmith.cli.common import USER_ERRORS, UsageError, console, err_console, fail, print_json
from tunesmith.project.spec import Stage

if TYPE_CHECKING:
    from tunesmith.project.pipeline import StageEvent

_Project = typer.Option(Path("."), "--project", "-p", help="The project folder (holding tunesmith.yaml).")


def init(
    directory: Path | None = typer.Argument(None, help="New project folder; its name names the project."),
    template: str | None = typer.Option(None, "--template", "-t", help="Template to start from."),
    list_templates: bool = typer.Option(False, "--list", help="Describe each template in a line."),
) -> None:
    """Create a project folder from a use-case template: tunesmith.yaml, a sample dataset and a README.

    Examples:
      tunesmith init --list
      tunesmith init shop --template local-marketing && cd shop && tunesmith run
    """
    from tunesmith.project.templates import init_project
    from tunesmith.project.templates import list_templates as templates

    if list_templates:
        for entry in templates():
            console.print(
                f"[bold]{entry.name:<16}[/] {entry.task:<14} {entry.summary}", highlight=False, soft_wrap=True
            )
        return
    if directory is None or template is None:
        raise UsageError("give DIR and --template NAME (`tunesmith init --list` names the templates)")
    project_file = init_project(directory, template)
    console.print(f"created {project_file} and the sample data in {directory / 'data'} ({template})")
    console.print(f"next: cd {directory} && tunesmith run   (read {directory / 'README.md'} first)")


def run(
    stage: Stage | None = typer.Argument(None, help="Run up to this stage (and what it reads); default all."),
    force: list[Stage] = typer.Option(
        [], "--force", "-f", help="Rerun this stage even if up to date (repeatable)."
    ),
    project: Path = _Project,
    json_output: bool = typer.Option(False, "--json", help="Print what ran and the report as JSON."),
) -> None:
    """Run the project's pipeline: prepare, baseline, train, eval, gate, register, deploy.

    A stage runs only when it is stale: when its configuration, its input files or the output of a
    stage it reads changed since its last success, or its outputs are gone. Changing eval settings
    reruns the evaluation only; changing the learning rate reruns train and what follows. A failed
    stage stops the run; the stages before it keep their results.
    """
    from tunesmith.project.gate import GateFailed
    from tunesmith.project.pipeline import StageFailed, run_project

    started = time.perf_counter()
    try:
        outcome = run_project(
            project, stage, force=force, show_progress=not json_output, on_event=_show_event
        )
    except StageFailed as failure:
        if not isinstance(failure.__cause__, (*USER_ERRORS, GateFailed)):
            raise  # a bug, not the project: the traceback says where
        err_console.print("earlier stages keep their results; `tunesmith status` shows where things stand")
        fail(str(failure))
    report = json.loads((outcome.eval_dir / "report.json").read_text()) if outcome.eval_dir else None
    if json_output:
        print_json({"ran": outcome.ran, "up_to_date": outcome.up_to_date, "report": report})
        return
    if not outcome.ran:
        console.print(
            f"[bold green]everything is up to date[/]: nothing to run ({len(outcome.up_to_date)} stages)"
        )
    elif report is not None and Stage.eval in outcome.ran:
        from tunesmith.cli.evaluate import print_report_table

        print_report_table(report, title=f"before / after on {report['data']['examples']} held-out examples")
        console.print(f"ran {', '.join(outcome.ran)} in {time.perf_counter() - started:.0f}s")
    if outcome.eval_dir is not None:
        console.print(f"report: {outcome.eval_dir / 'report.md'}", highlight=False)


def _show_event(event: StageEvent) -> None:
    from tunesmith.project.pipeline import StageState

    took = f" ({event.seconds:.0f}s)" if event.seconds is not None else ""
    if event.state is StageState.stale:
        err_console.print(f"[bold]▶ {event.stage}[/]: {'; '.join(event.lines)}", highlight=False)
    elif event.state is StageState.failed:
        err_console.print(f"[bold red]✗ {event.stage}[/]{took}: {event.lines[0]}", highlight=False)
    else:
        mark = "[green]✓[/]" if event.seconds is not None else "[dim]= up to date[/]"
        err_console.print(f"{mark} [bold]{event.stage}[/]{took}: {event.lines[0]}", highlight=False)


def status(
    project: Path = _Project,
    json_output: bool = typer.Option(False, "--json", help="Print each stage's state as JSON."),
) -> None:
    """What each stage of the project last made, and whether it is up to date or stale (and why)."""
    from tunesmith.project.pipeline import StageState, project_status

    statuses = project_status(project)
    if json_output:
        print_json(
            [
                {"stage": s.stage, "state": s.state, "reasons": s.reasons, "summary": s.summary}
                for s in statuses
            ]
        )
        return
    colors = {StageState.up_to_date: "green", StageState.stale: "yellow", StageState.failed: "red"}
    table = Table("stage", "state", "why / last result", title=f"project {project.resolve().name}")
    for entry in statuses:
        color = colors.get(entry.state, "dim")
        detail = "; ".join(entry.reasons) if entry.reasons else entry.summary or ""
        table.add_row(entry.stage.value, f"[{color}]{entry.state}[/]", detail)
    console.print(table)
