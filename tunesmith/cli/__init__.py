"""The `tunesmith` command line (typer + rich). Each command parses, calls one library function, formats.

Heavy libraries (torch, transformers) are imported inside commands, so `--help` is instant.
"""

from __future__ import annotations

import sys
import warnings

import typer

from tunesmith.cli import (
    ab,
    adapters,
    audit,
    compare,
    config,
    data,
    deploy,
    evaluate,
    export,
    federated,
    guardrails,
    keys,
    logs,
    loop,
    models,
    monitor,
    project,
    quickstart,
    review,
    runs,
    serve,
    train,
    tune,
    ui,
)

app = typer.Typer(
    name="tunesmith",
    help="From raw domain data to a fine-tuned, evaluated open LLM. Start with `tunesmith quickstart`.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(models.app, name="models")
app.add_typer(data.app, name="data")
app.add_typer(runs.app, name="runs")
app.add_typer(keys.app, name="keys")
app.add_typer(adapters.app, name="adapters")
app.add_typer(deploy.app, name="deploy")
app.add_typer(config.app, name="config")
app.add_typer(ab.app, name="ab")
app.add_typer(monitor.app, name="monitor")
app.add_typer(audit.app, name="audit")
app.add_typer(logs.app, name="logs")
app.add_typer(guardrails.app, name="guardrails")
app.add_typer(loop.app, name="loop")
app.add_typer(review.app, name="review")
app.add_typer(federated.app, name="federated")
app.command("train")(train.train)
app.command("tune")(tune.tune)
app.command("eval")(evaluate.evaluate)
app.command("compare")(compare.compare)
app.command("export")(export.export)
app.command("quickstart")(quickstart.quickstart)
app.command("serve")(serve.serve)
app.command("ui")(ui.ui)
app.command("init")(project.init)
app.command("run")(project.run)
app.command("status")(project.status)


def main() -> None:
    """Entry point: run the app, turning user errors into one clear message and exit code 2."""
    from tunesmith.cli.common import USER_ERRORS, fail

    # peft calls a transformers property that warns on every model wrap; not actionable for users.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        app()
    except USER_ERRORS as error:
        fail(str(error))
    except KeyboardInterrupt:
        sys.exit(130)
