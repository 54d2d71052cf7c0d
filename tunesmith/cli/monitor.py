"""`tunesmith monitor`: one monitoring pass over a deployment, and the alerts passes have raised."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tunesmith.cli.common import UsageError, console, print_json

if TYPE_CHECKING:
    from tunesmith.monitor.quality import SampledJudge

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
    judge_model: Annotated[
        str | None,
        typer.Option(
            "--judge-model",
            help="Score a sample of each window's answers with this LLM judge: a local model (catalog name, "
            "directory) or the endpoint's model id (default: no judge).",
        ),
    ] = None,
    judge_url: Annotated[
        str | None,
        typer.Option("--judge-url", help="The judge's OpenAI-compatible endpoint; unset: run it locally."),
    ] = None,
    judge_sample: Annotated[
        int, typer.Option("--judge-sample", help="Answers per window the judge scores (judging is slow).")
    ] = 50,
    rubric: Annotated[
        Path | None,
        typer.Option(
            "--rubric",
            help="YAML file mapping each criterion to what a 5 means (default: helpfulness and correctness).",
        ),
    ] = None,
    json_output: _Json = False,
) -> None:
    """Compare the latest window of requests with the adapter's training prompts and the window before
    (drift test calibrated to 5% false alarms at any window size; output, language and, with
    --judge-model, judge-score signals); store and print the alerts."""
    import time

    from tunesmith.config import duration_seconds
    from tunesmith.monitor.check import monitor_deployment

    try:
        pause = None if every is None else float(duration_seconds(every))
    except ValueError as error:
        raise UsageError(f"--every {error}") from error
    if pause is not None and pause <= 0:
        raise UsageError(f"--every {every}: give a positive duration, e.g. 10m")
    if judge_model is None and (judge_url is not None or rubric is not None):
        raise UsageError("--judge-url and --rubric configure the judge: give --judge-model too")
    judge = None if judge_model is None else _sampled_judge(judge_model, judge_url, judge_sample, rubric)
    registry = _registry()
    while True:
        _show(monitor_deployment(registry, deployment, window, embeddings, judge), deployment, json_output)
        if pause is None:
            return
        time.sleep(pause)


def _sampled_judge(model: str, base_url: str | None, sample: int, rubric: Path | None) -> SampledJudge:
    """The judge the flags describe, validated as the serve config's `monitor_judge`."""
    import yaml
    from pydantic import ValidationError

    from tunesmith.config import MonitorJudgeSpec
    from tunesmith.eval.judge import make_judge
    from tunesmith.monitor.quality import SampledJudge

    fields: dict[str, Any] = {"model": model, "base_url": base_url, "sample": sample}
    if rubric is not None:
        try:
            fields["criteria"] = yaml.safe_load(rubric.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as error:
            raise UsageError(f"--rubric {rubric}: {error}") from error
    try:
        spec = MonitorJudgeSpec(**fields)
    except ValidationError as error:
        flags = {
            "model": "--judge-model",
            "base_url": "--judge-url",
            "sample": "--judge-sample",
            "criteria": "--rubric",
        }
        raise UsageError(
            "; ".join(f"{flags[str(item['loc'][0])]}: {item['msg']}" for item in error.errors())
        ) from error
    return SampledJudge(make_judge(spec.model, spec.base_url, spec.api_key_env), spec.criteria, spec.sample)


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
    if "languages" in report:
        _show_languages(report["languages"])
    if report.get("judge"):
        _show_judge(report["judge"])
    if report.get("not_logged"):
        console.print(
            f"  {report['not_logged']} requests logged without their text (request log off): "
            "counted in the rates and latency, not in drift, languages or the judge",
            highlight=False,
        )
    for alert in report["alerts"]:
        console.print(f"  [red]alert[/] {alert['kind']}: {alert['message']}", highlight=False)
    if "note" in report:
        console.print(f"  {report['note']}", highlight=False)


def _show_languages(languages: dict[str, Any]) -> None:
    for side in ("prompts", "answers"):
        shares = "  ".join(f"{language} {share['rate']:.0%}" for language, share in languages[side].items())
        console.print(f"  {side} by language: {shares or 'none logged'}", highlight=False)
    mismatch = languages["mismatch"]
    if mismatch["n"]:
        console.print(f"  answers not in the prompt's language {mismatch['rate']:.1%} of {mismatch['n']}",
                      highlight=False)  # fmt: skip


def _show_judge(judge: dict[str, Any]) -> None:
    for name in ("current", "previous"):
        score = judge[name]
        if score is None:
            continue
        if score["mean"] is None:
            console.print(f"  judge {name} window: no score ({score['unparseable']} replies without one)",
                          highlight=False)  # fmt: skip
            continue
        console.print(
            f"  judge ({', '.join(judge['rubric'])}) {name} window: {score['mean']:.2f} "
            f"[{score['ci_low']:.2f}, {score['ci_high']:.2f}] over {score['sampled']} of {score['of']} answers"
            + (f", {score['unparseable']} unparseable" if score["unparseable"] else ""),
            highlight=False,
        )


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
