"""`tunesmith ab report`: a deployment's A/B test, with an always-valid verdict you may read any time."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tunesmith.cli.common import console, print_json

app = typer.Typer(help="A/B tests between a deployment's variants: rates, intervals, verdicts.")


def _interval(low: float, high: float) -> str:
    return f"[{low:+.3f}, {high:+.3f}]"


def _print(report: dict[str, Any]) -> None:
    console.print(
        f"[bold]{report['deployment']}[/]  since {report['since'][:19]}  requests: {report['requests']}  "
        f"control: {report['control']}  sample ratio p={report['sample_ratio']['p_value']:.3g}",
        highlight=False,
    )
    for variant in report["variants"]:
        thumbs = variant["thumbs_up"]
        rate = "-" if thumbs["rate"] is None else f"{thumbs['rate']:.1%} of {thumbs['n']}"
        rating = "-" if variant["mean_rating"] is None else f"{variant['mean_rating']:.2f}"
        console.print(
            f"  {variant['model']:<20} {variant['share']:5.1%} of traffic  {variant['requests']:>6} requests  "
            f"thumbs up {rate}  rating {rating}  wins {variant['pairwise']['wins']}-{variant['pairwise']['losses']}",
            highlight=False,
        )
        for name, outcome in variant["outcomes"].items():
            low, high = outcome["interval"]
            console.print(
                f"    {name:<18} {outcome['rate'] or 0:.1%} [{low:.1%}, {high:.1%}]", highlight=False
            )
        for metric, comparison in variant.get("versus_control", {}).items():
            if comparison["difference"] is None:
                console.print(f"    vs control {metric:<10} no data in both arms yet", highlight=False)
                continue
            more = comparison["samples_to_decide"]
            console.print(
                f"    vs control {metric:<10} {comparison['difference']:+.3f} {_interval(*comparison['interval'])} "
                f"p={comparison['p_value']:.3g}  {comparison['verdict']}"
                + (f" (about {more} observations in all to decide)" if more else ""),
                highlight=False,
            )
    console.print(f"[bold]verdict:[/] {report['verdict']}", highlight=False)


@app.command("report")
def report(
    deployment: Annotated[str, typer.Argument(help="Deployment name.", show_default=False)],
    control: Annotated[
        str | None, typer.Option("--control", help="The variant to compare with (default: the heaviest).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Per variant: requests, thumbs-up rate, mean rating, pairwise wins, outcome rates; each rate against
    the control by an always-valid test (mSPRT), so reading the report every hour does not inflate false
    positives; a sample-ratio-mismatch check; a verdict."""
    from tunesmith.config import default_database_url
    from tunesmith.monitor.ab import load_ab_report
    from tunesmith.registry.store import Registry

    result = load_ab_report(Registry(default_database_url()).connect(), deployment, control)
    if json_output:
        print_json(result)
    else:
        _print(result)
