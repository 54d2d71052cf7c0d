"""The loop's two verdicts, pure: does the candidate clear the gate, and how did its canary end. No torch.

Owns: reading the paired comparisons of an evaluation report (candidate against champion, each with its
95% interval), the judge's preferences and a bias audit's gate into gate checks, one line each; and
reading an A/B report (`monitor.ab`) into promote, roll back or keep watching. Does not own: producing the reports (`eval`,
`monitor.ab`) or acting on the verdicts (`steps`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.eval.records import EvalReport, format_interval
from tunesmith.eval.stats import bootstrap_interval, resample_indices

CHAMPION, CANDIDATE = "champion", "candidate"  # the two models' names in the gate's reports


@dataclass(frozen=True)
class GateCheck:
    name: str  # the metric, or "judge"
    passed: bool
    line: str  # what was measured and what it needed, in words


def metric_checks(
    report: dict[str, Any], metric: str, min_delta: float, tolerance: float, tolerances: dict[str, float]
) -> list[GateCheck]:
    """The gate metric's interval must clear `min_delta`; every other metric may fall by its tolerance."""
    typed = EvalReport.model_validate(report)
    checks = []
    for row in typed.comparisons:
        if row.model != CANDIDATE or row.reference != CHAMPION:
            continue
        margin = format_interval(row.difference, row.ci_low, row.ci_high, signed=True)
        if row.metric == metric:
            passed = row.ci_low > min_delta
            checks.append(
                GateCheck(metric, passed, f"{metric}: {margin} (needs the interval above {min_delta:g})")
            )
        else:
            allowed = tolerances.get(row.metric, tolerance)
            passed = row.difference >= -allowed
            checks.append(GateCheck(row.metric, passed, f"{row.metric}: {margin} (may fall by {allowed:g})"))
    checks.sort(key=lambda check: check.name != metric)  # the gate metric first
    return checks


def judge_check(outcomes: Sequence[float | None], min_win_rate: float, samples: int) -> GateCheck:
    """The candidate's win rate over the judged prompts (ties half) with its bootstrap interval; passes
    unless the judge prefers the champion significantly (the interval's upper end below `min_win_rate`)."""
    valid = np.asarray([outcome for outcome in outcomes if outcome is not None], dtype=np.float64)
    if len(valid) == 0:
        return GateCheck("judge", False, "judge: no parseable verdict on any production prompt")
    interval = bootstrap_interval(
        valid[:, None], lambda stats: float(stats.mean()), resample_indices(len(valid), samples)
    )
    passed = interval.ci_high >= min_win_rate
    margin = format_interval(interval.value, interval.ci_low, interval.ci_high)
    skipped = len(outcomes) - len(valid)
    return GateCheck(
        "judge",
        passed,
        f"judge win rate on {len(valid)} production prompts: {margin} (needs the interval to reach "
        f"{min_win_rate:g})" + (f"; {skipped} unparseable" if skipped else ""),
    )


def bias_check(report: dict[str, Any]) -> GateCheck:
    """The bias audit's own gate (`audit.bias_findings`): every gated flip rate's upper 95% bound within its
    threshold; a failure names each attribute, measure and bound."""
    gate = report["gate"]
    if not gate["passed"]:
        return GateCheck("bias", False, "bias: " + " | ".join(gate["failures"]))
    measures = ", ".join(gate["measures"])
    return GateCheck(
        "bias",
        True,
        f"bias: {measures} within {gate['threshold']:g} (upper 95% bounds) over {report['pairs']} "
        "counterfactual pairs",
    )


@dataclass(frozen=True)
class CanaryVerdict:
    action: str | None  # "promote", "roll_back", or None: keep watching
    reason: str
    summary: dict[str, Any]  # the numbers the decision read


def canary_verdict(
    report: dict[str, Any], candidate: str, metric: str, max_requests: int, undecided: str
) -> CanaryVerdict:
    """Promote on a better verdict, roll back on a worse one or a broken split; at `max_requests`
    candidate requests without either, do what `undecided` says; else keep watching."""
    variant = next(v for v in report["variants"] if v["model"] == candidate)
    comparison = variant["versus_control"].get(metric)
    summary = {"requests": variant["requests"], "metric": metric, "sample_ratio": report["sample_ratio"],
               "comparison": comparison}  # fmt: skip
    if report["sample_ratio"]["mismatch"]:
        p_value = report["sample_ratio"]["p_value"]
        return CanaryVerdict(
            "roll_back", f"traffic split does not match the weights (p={p_value:.2g})", summary
        )
    if comparison is None or comparison["difference"] is None:
        return CanaryVerdict(None, f"no {metric} observations on both variants yet", summary)
    shown = f"{metric} {comparison['difference']:+.3f} [{comparison['interval'][0]:+.3f}, " \
        f"{comparison['interval'][1]:+.3f}], always-valid p={comparison['p_value']:.2g}"  # fmt: skip
    if comparison["verdict"] == "better":
        return CanaryVerdict("promote", f"better than the champion: {shown}", summary)
    if comparison["verdict"] == "worse":
        return CanaryVerdict("roll_back", f"worse than the champion: {shown}", summary)
    if variant["requests"] >= max_requests:
        return CanaryVerdict(undecided, f"no verdict after {variant['requests']} requests ({shown})", summary)
    more = comparison["samples_to_decide"]
    expected = f"; about {more} observations in all to decide" if more else ""
    return CanaryVerdict(None, f"keep collecting: {shown}{expected}", summary)
