"""The A/B report of a deployment: per variant requests, thumbs-up rate, mean rating, pairwise wins and
outcome rates, each rate compared with the control by the always-valid test in `sequential`, a
sample-ratio-mismatch check, and a verdict. `ab_report` is pure (traffic in, report out);
`load_ab_report` reads the registry and calls it.

Owns: turning logged traffic into per-variant counts and time-ordered 0/1 series, and the verdict
rule. Does not own: the statistics (see `sequential`), the queries (see `registry.monitor_store`) or
printing (see `cli/ab.py`).

The experiment is the deployment's current variant set: only traffic since its latest change counts,
since weights that changed mid-way make the sample-ratio check and the comparison meaningless.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import numpy as np

from tunesmith.monitor.sequential import (
    confidence_sequence,
    msprt_log_ratio,
    sample_ratio_mismatch,
    samples_to_decide,
    wilson_interval,
)
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_records import Caller, VariantWeight
from tunesmith.registry.serving_store import NotFoundError, ServingStore
from tunesmith.registry.store import Registry

__all__ = ["ALPHA", "MIXTURE_SD", "SRM_ALARM", "ab_report", "compare_rates", "load_ab_report"]

ALPHA = 0.05  # the chance the test ever calls a difference that is not there, however often one looks
# The spread of differences in rate the mSPRT's mixture expects: detects ~5-point differences fastest
# (benchmarks/ab_simulation.py; figures in benchmarks/RESULTS.md).
MIXTURE_SD = 0.05
SRM_ALARM = 0.001  # the usual sample-ratio-mismatch threshold: below it, assignment or logging is broken


def compare_rates(is_variant: np.ndarray, success: np.ndarray, share: float) -> dict[str, Any]:
    """The control-vs-variant comparison of a 0/1 series in time order (`is_variant` marks the variant's
    observations): the difference, the running-intersected confidence sequence, the always-valid
    p-value, a verdict and the total sample expected to decide."""
    variant_n = np.cumsum(is_variant)
    control_n = np.arange(1, len(is_variant) + 1) - variant_n
    variant_s = np.cumsum(success * is_variant)
    control_s = np.cumsum(success * ~is_variant)
    seen = (variant_n > 0) & (control_n > 0)
    if not seen.any():
        return {"difference": None, "interval": None, "p_value": 1.0, "verdict": "keep collecting",
                "samples_to_decide": None}  # fmt: skip
    args = (control_s[seen], control_n[seen], variant_s[seen], variant_n[seen])
    log_ratio = msprt_log_ratio(*args, tau=MIXTURE_SD)
    low, high = confidence_sequence(*args, tau=MIXTURE_SD, alpha=ALPHA)
    low_now, high_now = float(np.max(low)), float(np.min(high))  # intersected over every look
    control_rate = float(control_s[-1] / control_n[-1])
    difference = float(variant_s[-1] / variant_n[-1]) - control_rate
    verdict = "better" if low_now > 0 else "worse" if high_now < 0 else "keep collecting"
    to_decide = None
    if verdict == "keep collecting" and difference != 0:
        to_decide = samples_to_decide(control_rate, difference, MIXTURE_SD, ALPHA, share)
    return {
        "difference": difference,
        "interval": [low_now, high_now],
        "p_value": float(min(1.0, math.exp(-float(np.max(log_ratio))))),
        "verdict": verdict,
        "samples_to_decide": to_decide,
    }


def _rate(successes: int, n: int) -> dict[str, Any]:
    return {"n": n, "rate": successes / n if n else None, "interval": list(wilson_interval(successes, n))}


def _variant_of(traffic: list[dict[str, Any]]) -> dict[str, str]:
    return {request["id"]: request["variant"] for request in traffic}


def _assignment_units(traffic: list[dict[str, Any]], model: str) -> int:
    """How many times `model` was chosen: once per user (the choice is sticky per `user`), once per
    request without one. Counting a regular's every request would make the split look lopsided."""
    served = [request for request in traffic if request["variant"] == model]
    users = {request["user"] for request in served if request["user"] is not None}
    return len(users) + sum(request["user"] is None for request in served)


def _pairwise(traffic: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Wins and losses per variant from preferences and rankings that compare two variants' answers."""
    variant = _variant_of(traffic)
    tally: dict[str, dict[str, int]] = {}
    for request in traffic:
        for item in request["feedback"]:
            pairs = [(request["id"], item["preferred_over"])] if item["preferred_over"] else []
            ranking = item["ranking"] or []
            pairs += [(better, worse) for i, better in enumerate(ranking) for worse in ranking[i + 1 :]]
            for better, worse in pairs:
                winner, loser = variant.get(better), variant.get(worse)
                if winner is None or loser is None or winner == loser:
                    continue
                tally.setdefault(winner, {"wins": 0, "losses": 0})["wins"] += 1
                tally.setdefault(loser, {"wins": 0, "losses": 0})["losses"] += 1
    return tally


def _series(
    traffic: list[dict[str, Any]], variant: str, control: str, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """(is_variant, success) over the two arms' observations of `metric` in time order: `thumbs` (a
    response with thumbs, up = 1) or an outcome name (every request, 1 if the outcome followed)."""
    is_variant, success = [], []
    for request in traffic:
        if request["variant"] not in (variant, control):
            continue
        if metric == "thumbs":
            observed = [item["thumbs"] == "up" for item in request["feedback"] if item["thumbs"]]
            if not observed:
                continue
            hit = observed[-1]  # a later thumbs on the same response replaces an earlier one
        else:
            hit = any(outcome["name"] == metric for outcome in request["outcomes"])
        is_variant.append(request["variant"] == variant)
        success.append(hit)
    return np.asarray(is_variant, dtype=bool), np.asarray(success, dtype=np.float64)


def _summary(traffic: list[dict[str, Any]], model: str, outcome_names: list[str]) -> dict[str, Any]:
    served = [request for request in traffic if request["variant"] == model]
    thumbs = [
        [item["thumbs"] for item in request["feedback"] if item["thumbs"]][-1]
        for request in served
        if any(item["thumbs"] for item in request["feedback"])
    ]
    ratings = [
        item["rating"] for request in served for item in request["feedback"] if item["rating"] is not None
    ]
    outcomes = {}
    for name in outcome_names:
        hits = sum(any(o["name"] == name for o in request["outcomes"]) for request in served)
        values = [
            o["value"] for request in served for o in request["outcomes"] if o["name"] == name and o["value"]
        ]
        outcomes[name] = {**_rate(hits, len(served)), "value_sum": float(sum(values))}
    return {
        "requests": len(served),
        "thumbs_up": _rate(thumbs.count("up"), len(thumbs)),
        "mean_rating": float(np.mean(ratings)) if ratings else None,
        "ratings": len(ratings),
        "outcomes": outcomes,
    }


def ab_report(
    traffic: list[dict[str, Any]], variants: list[VariantWeight], control: str | None = None
) -> dict[str, Any]:
    """The A/B report of `traffic` (as `MonitorStore.deployment_traffic` returns it, already limited to
    the current experiment) split between `variants`; `control` defaults to the heaviest variant."""
    models = [variant["model"] for variant in variants]
    control = control or max(variants, key=lambda variant: variant["weight"])["model"]
    if control not in models:
        raise NotFoundError(f"--control {control}: not a variant of this deployment ({', '.join(models)})")
    total_weight = sum(variant["weight"] for variant in variants)
    counts = [_assignment_units(traffic, model) for model in models]
    srm_p = sample_ratio_mismatch(counts, [variant["weight"] for variant in variants])
    outcome_names = sorted({o["name"] for request in traffic for o in request["outcomes"]})
    pairwise = _pairwise(traffic)
    report_variants = []
    for variant in variants:
        model = variant["model"]
        summary = {
            "model": model,
            "share": variant["weight"] / total_weight,
            **_summary(traffic, model, outcome_names),
        }
        summary["pairwise"] = pairwise.get(model, {"wins": 0, "losses": 0})
        if model != control:
            share = variant["weight"] / (
                variant["weight"] + next(v["weight"] for v in variants if v["model"] == control)
            )
            summary["versus_control"] = {
                metric: compare_rates(*_series(traffic, model, control, metric), share=share)
                for metric in ["thumbs", *outcome_names]
            }
        report_variants.append(summary)
    verdicts = [c["verdict"] for v in report_variants for c in v.get("versus_control", {}).values()]
    return {
        "control": control,
        "requests": len(traffic),
        "alpha": ALPHA,
        "sample_ratio": {"p_value": srm_p, "mismatch": srm_p < SRM_ALARM},
        "verdict": _overall(verdicts, srm_p < SRM_ALARM, len(traffic)),
        "variants": report_variants,
    }


def _overall(verdicts: list[str], mismatch: bool, requests: int) -> str:
    """One line: no traffic, a broken split, any metric worse, any better, or keep collecting."""
    if requests == 0:
        return "no traffic yet"
    if mismatch:
        return "sample ratio mismatch: fix assignment or logging before reading any result"
    if "worse" in verdicts:
        return "worse"
    return "better" if "better" in verdicts else "keep collecting"


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def load_ab_report(registry: Registry, name: str, control: str | None = None) -> dict[str, Any]:
    """The A/B report of deployment `name` over the traffic since its variants last changed."""
    deployment = ServingStore(registry).find_deployment(Caller(tenant=None, is_admin=True), name)
    if deployment is None:
        raise NotFoundError(f"no deployment named {name} (see `tunesmith deploy list`)")
    since = _parse_time(deployment["history"][-1]["at"])
    traffic = [
        request
        for request in MonitorStore(registry).deployment_traffic(name)
        if _parse_time(request["created_at"]) >= since
    ]
    return {
        "deployment": name,
        "since": since.isoformat(),
        **ab_report(traffic, deployment["variants"], control),
    }
