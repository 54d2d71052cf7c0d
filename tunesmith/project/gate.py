"""The gate: does the adapter beat the baselines by enough, and significantly, on the gate's metrics?

Owns: reading the verdicts the evaluation report already holds (the paired difference with its
interval and p-value of the fine-tuned model against each baseline) and turning them into one line per
check, passed or not, and the verdict as the registry keeps it (`gate_verdict`). Does not own: the
statistics (`tunesmith.eval.stats`), recording the verdict (`registry.store`) or stopping the pipeline
(`pipeline`). No torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tunesmith.eval.records import EvalReport, format_interval, format_number
from tunesmith.eval.stats import ALPHA

FINE_TUNED = "fine-tuned"  # the adapter's name in the project's reports


class GateFailed(ValueError):
    """The adapter did not clear the gate; the message has one line per failed check."""


@dataclass(frozen=True)
class GateCheck:
    metric: str
    baseline: str  # the report's model name, e.g. "base 5-shot"
    passed: bool
    line: str  # what was measured, in words
    difference: float  # the fine-tuned model's score minus the baseline's
    ci_low: float  # the difference's 95% bootstrap interval
    ci_high: float
    p_value: float  # paired approximate-randomization test


def baseline_names(report: EvalReport) -> dict[str, str]:
    """`zero-shot` and `few-shot` -> the report's names for them."""
    names = {}
    for model in report.models:
        if model.shots == 0:
            names["zero-shot"] = model.name
        elif model.shots is not None:
            names["few-shot"] = model.name
    return names


def check_gate(
    report: dict[str, Any],
    metrics: Sequence[str],
    beat: Sequence[str],
    min_difference: float,
    significant: bool,
) -> list[GateCheck]:
    """One check per gate metric and baseline: the fine-tuned model's margin over it.

    Passes when the margin is at least `min_difference` and, with `significant`, the paired test calls
    the fine-tuned model better (p < 0.05).
    """
    typed = EvalReport.model_validate(report)
    names = baseline_names(typed)
    checks = []
    for metric in metrics:
        for baseline in beat:
            row = next(
                c for c in typed.comparisons
                if c.model == FINE_TUNED and c.reference == names[baseline] and c.metric == metric
            )  # fmt: skip
            passed = row.difference >= min_difference and (not significant or row.verdict == "better")
            margin = format_interval(row.difference, row.ci_low, row.ci_high, signed=True)
            needed = f"needs >= {format_number(min_difference, signed=True)}" + (
                f" and p < {ALPHA}" if significant else ""
            )
            line = f"{metric} vs {row.reference}: {margin}, p {format_number(row.p_value)} ({needed})"
            checks.append(
                GateCheck(
                    metric, row.reference, passed, line, row.difference, row.ci_low, row.ci_high, row.p_value
                )
            )
    return checks


def gate_verdict(
    checks: Sequence[GateCheck], settings: dict[str, Any], evaluation_id: int, run_id: str, adapter_dir: str
) -> dict[str, Any]:
    """The verdict as the registry keeps it: an evaluation record of kind `gate` among the run's evaluations,
    naming the evaluation it read, the candidate and every check's margin and interval."""
    return {"kind": "gate", "passed": all(check.passed for check in checks), "evaluation_id": evaluation_id,
            "run_id": run_id, "adapter_dir": adapter_dir, "gate": settings,
            "checks": [asdict(check) for check in checks]}  # fmt: skip
