"""Output and quality signals of a window of served requests, and the rule that turns a change in them
into an alert. Pure.

Owns: per-window rates (empty answers, answers cut at max_tokens, refusals, repetition, thumbs down),
mean answer length and latency percentiles, and the comparison of a window with the window before it.
Does not own: reading traffic (see `registry.monitor_store`) or input drift (see `drift`).

Errors (requests that failed) are not in the request log; they are counted by the server's
`tunesmith_requests{status=...}` Prometheus counter.
"""

from __future__ import annotations

import math
import re
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["RATE_ALARM", "compare_windows", "is_refusal", "is_repetitive", "rise_p_value", "window_signals"]

RATE_ALARM = 0.01  # one-sided p-value below which a rate's rise over the previous window alerts
_REFUSAL = re.compile(
    r"\b(I can(?:'|no)t help|I(?:'m| am) (?:sorry|unable|not able)|I cannot (?:assist|help|provide)|"
    r"as an AI\b|I won't be able)",
    re.IGNORECASE,
)
RATES = ("empty", "truncated", "refusal", "repetitive", "thumbs_down")


def is_refusal(text: str) -> bool:
    return _REFUSAL.search(text) is not None


def is_repetitive(text: str, n: int = 3, share: float = 0.5) -> bool:
    """Whether at least `share` of the answer's word n-grams repeat an earlier one (a looping answer)."""
    words = text.split()
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) >= 4 and 1 - len(set(grams)) / len(grams) >= share


def window_signals(traffic: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and rates over one window: each rate as {"count", "n", "rate"}; answers counted per choice."""
    answers = [text for request in traffic for text in request["outputs"]]
    reasons = [reason for request in traffic for reason in request["finish_reasons"]]
    thumbs = [item["thumbs"] for request in traffic for item in request["feedback"] if item["thumbs"]]
    counts = {
        "empty": (sum(not text.strip() for text in answers), len(answers)),
        "truncated": (sum(reason == "length" for reason in reasons), len(reasons)),
        "refusal": (sum(is_refusal(text) for text in answers), len(answers)),
        "repetitive": (sum(is_repetitive(text) for text in answers), len(answers)),
        "thumbs_down": (thumbs.count("down"), len(thumbs)),
    }
    latency = [request["latency_ms"] for request in traffic]
    return {
        "requests": len(traffic),
        "rates": {
            name: {"count": c, "n": n, "rate": c / n if n else None} for name, (c, n) in counts.items()
        },
        "mean_completion_tokens": float(np.mean([r["completion_tokens"] for r in traffic]))
        if traffic
        else None,
        "latency_ms_p50": float(np.percentile(latency, 50)) if latency else None,
        "latency_ms_p95": float(np.percentile(latency, 95)) if latency else None,
    }


def rise_p_value(now: dict[str, Any], before: dict[str, Any]) -> float | None:
    """One-sided two-proportion z-test p-value of a rate's rise from `before` to `now` (each {"count",
    "n", "rate"}); None when either window has no observation or both rates are 0 or 1."""
    if not now["n"] or not before["n"]:
        return None
    pooled = (now["count"] + before["count"]) / (now["n"] + before["n"])
    spread = math.sqrt(pooled * (1 - pooled) * (1 / now["n"] + 1 / before["n"]))
    if spread == 0:
        return None
    return 1 - NormalDist().cdf((now["rate"] - before["rate"]) / spread)


def compare_windows(current: dict[str, Any], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """Alerts for each rate that rose significantly (one-sided two-proportion z-test, p < RATE_ALARM)
    from the previous window to the current one."""
    alerts = []
    for name in RATES:
        now, before = current["rates"][name], previous["rates"][name]
        p_value = rise_p_value(now, before)
        if p_value is not None and p_value < RATE_ALARM:
            alerts.append({
                "kind": f"{name}_rate",
                "message": f"{name} rate rose from {before['rate']:.1%} to {now['rate']:.1%} (p={p_value:.2g})",
                "data": {"previous": before, "current": now, "p_value": p_value},
            })  # fmt: skip
    return alerts
