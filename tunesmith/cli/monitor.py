"""`tunesmith monitor`: one monitoring pass over a deployment, and the alerts passes have raised."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tunesmith.cli.common import UsageError, console, print_json

app = typer.Typer(
    help="Monitoring: input drift, output signals, feedback and latency; alerts in the registry."
)

_Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _registry() -> Any:
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    return Registry(default_database_url()).connect()


@app.command("check")
def check(
    deployment: Annotated[str, typer.Argument(help="Deployment name.", show_default=False)],
    window: Annotated[
        int, typer.Option("--window", help="Requests per window (the latest, and the one before).")
    ] = 1000,
    embeddings: Annotated[
        bool,
        typer.Option("--embeddings", help="Also test drift on the base model's hidden states (loads it)."),
    ] = False,
    every: Annotated[
        str | None, typer.Option("--every", help="Repeat, e.g. 10m or 1h, until interrupted (default: once).")
    ] = None,
    json_output: _Json = False,
) -> None:
    """Compare the latest window of requests with the adapter's training prompts and the window before
    (drift test calibrated to 5% false alarms at any window size); store and print the alerts."""
    import time

    from tunesmith.config import duration_seconds
    from tunesmith.monitor.check import monitor_deployment

    try:
        pause = None if every is None else float(duration_seconds(every))
    except ValueError as error:
        raise UsageError(f"--every {error}") from error
    if pause is not None and pause <= 0:
        raise UsageError(f"--every {every}: give a positive duration, e.g. 10m")
    registry = _registry()
    while True:
        _show(monitor_deployment(registry, deployment, window, embeddings), deployment, json_output)
        if pause is None:
            return
        time.sleep(pause)


def _show(report: dict[str, Any], deployment: str, json_output: bool) -> None:
    if json_output:
        print_json(report)
        return
    console.print(f"[bold]{deployment}[/]  latest {report['requests']} requests", highlight=False)
    for test in report["drift"]:
        flag = "[red]drift[/]" if test["alarm"] else "no drift"
        console.print(
            f"  input ({test['test']}) vs {test['against']}: p={test['p_value']:.3g}  {flag}", highlight=False
        )
    signals = report.get("signals")
    if signals:
        rates = "  ".join(
            f"{k} {v['rate']:.1%}" for k, v in signals["rates"].items() if v["rate"] is not None
        )
        console.print(f"  {rates}", highlight=False)
        console.print(
            f"  latency p50 {signals['latency_ms_p50']:.0f} ms  p95 {signals['latency_ms_p95']:.0f} ms  "
            f"mean answer {signals['mean_completion_tokens']:.1f} tokens",
            highlight=False,
        )
    for alert in report["alerts"]:
        console.print(f"  [red]alert[/] {alert['kind']}: {alert['message']}", highlight=False)
    if "note" in report:
        console.print(f"  {report['note']}", highlight=False)


@app.command("alerts")
def alerts(
    deployment: Annotated[
        str | None, typer.Argument(help="Only this deployment.", show_default=False)
    ] = None,
    json_output: _Json = False,
) -> None:
    """Alerts raised by monitoring passes, oldest first."""
    from tunesmith.registry.monitor_store import MonitorStore

    listed = MonitorStore(_registry()).list_alerts(deployment)
    if json_output:
        print_json(listed)
        return
    for alert in listed:
        console.print(f"{alert['at'][:19]}  {alert['deployment']:<16} {alert['kind']:<18} {alert['message']}",
                      highlight=False)  # fmt: skip
    if not listed:
        console.print("no alerts")
