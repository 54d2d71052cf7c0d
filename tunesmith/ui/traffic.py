"""A deployment's traffic and feedback per variant over time, in time buckets, for its charts. No torch.

Owns: bucketing logged requests (`MonitorStore.deployment_traffic`) by time and variant: requests per
bucket, and the mean rating of the feedback on each bucket's requests (thumbs count as 5 and 1, as the
feedback API stores them), plus per-variant totals. Does not own: the A/B statistics (`monitor.ab`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tunesmith.ui.charts import Series

BUCKETS = 24
# The x axis unit for a span of traffic: the first whose limit the span is under (seconds).
_UNITS = ((120.0, "seconds", 1.0), (7200.0, "minutes", 60.0), (172800.0, "hours", 3600.0),
          (float("inf"), "days", 86400.0))  # fmt: skip


def variant_totals(traffic: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: requests, feedback items, mean rating (None without ratings), thumbs-up share."""
    totals: dict[str, dict[str, Any]] = {}
    for request in traffic:
        entry = totals.setdefault(request["variant"], {"variant": request["variant"], "requests": 0,
                                                       "ratings": [], "up": 0, "thumbs": 0})  # fmt: skip
        entry["requests"] += 1
        for item in request["feedback"]:
            if item["rating"] is not None:
                entry["ratings"].append(item["rating"])
            if item["thumbs"] is not None:
                entry["thumbs"] += 1
                entry["up"] += item["thumbs"] == "up"
    return [
        {
            "variant": e["variant"],
            "requests": e["requests"],
            "feedback": len(e["ratings"]),
            "mean_rating": sum(e["ratings"]) / len(e["ratings"]) if e["ratings"] else None,
            "thumbs_up": e["up"] / e["thumbs"] if e["thumbs"] else None,
        }  # fmt: skip
        for e in sorted(totals.values(), key=lambda e: str(e["variant"]))
    ]


def traffic_series(traffic: list[dict[str, Any]]) -> tuple[list[Series], list[Series], str]:
    """(requests per bucket, mean rating per bucket) as one series per variant, and the x axis label.

    x is time since the first request, in a unit that suits the span; a bucket without ratings has no
    rating point.
    """
    if not traffic:
        return [], [], "time since the first request"
    times = [datetime.fromisoformat(request["created_at"]).timestamp() for request in traffic]
    start, span = min(times), max(max(times) - min(times), 1.0)
    width = span / BUCKETS
    counts: dict[str, list[int]] = {}
    ratings: dict[str, list[list[float]]] = {}
    for request, moment in zip(traffic, times, strict=True):
        bucket = min(int((moment - start) / width), BUCKETS - 1)
        variant = str(request["variant"])
        counts.setdefault(variant, [0] * BUCKETS)[bucket] += 1
        scores = ratings.setdefault(variant, [[] for _ in range(BUCKETS)])[bucket]
        scores.extend(float(item["rating"]) for item in request["feedback"] if item["rating"] is not None)
    _, unit, seconds = next(entry for entry in _UNITS if span < entry[0])
    hours = [(index + 0.5) * width / seconds for index in range(BUCKETS)]
    requests = [
        Series(name, list(zip(hours, map(float, row), strict=True))) for name, row in sorted(counts.items())
    ]
    rated = [
        Series(name, [(hour, sum(s) / len(s)) for hour, s in zip(hours, row, strict=True) if s])
        for name, row in sorted(ratings.items())
    ]
    return requests, rated, f"{unit} since the first request"
