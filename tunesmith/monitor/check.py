"""One monitoring pass over a deployment (`tunesmith monitor check`): input drift, output and quality
signals, latency, and the alerts they raise, stored in the registry.

Owns: choosing the windows (the latest `window` requests, the `window` before them) and the reference
(the training prompts of the heaviest variant's adapter, when its run names a dataset), running the
tests in `drift` and `signals`, and recording alerts. Does not own: the statistics or the queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.readers import read_rows
from tunesmith.monitor.drift import DRIFT_ALARM, hashed_bag_of_words, permutation_drift_test
from tunesmith.monitor.signals import compare_windows, window_signals
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import NotFoundError, ServingStore, parse_model_ref
from tunesmith.registry.store import Registry

__all__ = ["REFERENCE_ROWS", "monitor_deployment", "prompt_text"]

REFERENCE_ROWS = 4000  # training prompts sampled as the drift reference (benchmarks/drift_calibration.py)


def prompt_text(prompt: dict[str, Any]) -> str:
    """The user's words in a logged prompt (`{"messages": [...]}` or `{"prompt": "..."}`)."""
    if "prompt" in prompt:
        return str(prompt["prompt"])
    parts = []
    for message in prompt["messages"]:
        if message["role"] != "user":
            continue
        content = message["content"]
        parts.append(content if isinstance(content, str) else " ".join(part["text"] for part in content))
    return "\n".join(parts)


def _training_prompts(registry: Registry, model: str) -> tuple[list[str], str | None]:
    """Up to REFERENCE_ROWS user prompts the adapter `model` was trained on, and the file; none for
    `base` or an adapter registered without a run."""
    if model == "base":
        return [], None
    adapter = ServingStore(registry).find_adapter(Caller(tenant=None, is_admin=True), *parse_model_ref(model))
    run_id = MonitorStore(registry).adapter_run_id(adapter.name, adapter.version)
    run = registry.get_run(run_id) if run_id else None
    dataset = registry.get_dataset(run["dataset_id"]) if run and run["dataset_id"] else None
    if dataset is None or not Path(dataset["path"]).is_file():
        return [], None
    rows = [row for _, row in read_rows(Path(dataset["path"])) if isinstance(row, dict)]
    texts = [prompt_text(row) for row in rows if "messages" in row or "prompt" in row]
    rng = np.random.default_rng(0)
    if len(texts) > REFERENCE_ROWS:
        texts = [texts[i] for i in rng.choice(len(texts), REFERENCE_ROWS, replace=False)]
    return texts, dataset["path"]


def _drift(reference: list[str], window: list[str], against: str) -> dict[str, Any]:
    p_value, statistic = permutation_drift_test(hashed_bag_of_words(reference), hashed_bag_of_words(window))
    return {"against": against, "p_value": p_value, "statistic": statistic, "alarm": p_value < DRIFT_ALARM}


def monitor_deployment(registry: Registry, name: str, window: int = 1000) -> dict[str, Any]:
    """Signals of deployment `name`'s latest `window` requests against its training data and the window
    before; every alert is stored (`tunesmith monitor alerts`) and returned."""
    if window < 10:
        raise ValueError(f"--window {window}: use at least 10 requests")
    deployment = ServingStore(registry).find_deployment(Caller(tenant=None, is_admin=True), name)
    if deployment is None:
        raise NotFoundError(f"no deployment named {name} (see `tunesmith deploy list`)")
    monitor = MonitorStore(registry)
    traffic = monitor.deployment_traffic(name)
    current, previous = traffic[-window:], traffic[-2 * window : -window]
    report: dict[str, Any] = {"deployment": name, "window": window, "requests": len(current), "drift": []}
    if len(current) < 2:
        report["note"] = "fewer than 2 requests: nothing to measure yet"
        report["alerts"] = []
        return report
    texts = [prompt_text(request["prompt"]) for request in current]
    heaviest = max(deployment["variants"], key=lambda variant: variant["weight"])["model"]
    reference, path = _training_prompts(registry, heaviest)
    if len(reference) >= 2:
        report["drift"].append(_drift(reference, texts, f"training data of {heaviest} ({path})"))
    if len(previous) >= 2:
        report["drift"].append(_drift([prompt_text(r["prompt"]) for r in previous], texts, "previous window"))
    report["signals"] = window_signals(current)
    alerts = compare_windows(report["signals"], window_signals(previous)) if previous else []
    alerts += [
        {"kind": "input_drift", "message": f"prompts differ from the {test['against']} (p={test['p_value']:.3g})",
         "data": test}
        for test in report["drift"] if test["alarm"]
    ]  # fmt: skip
    for alert in alerts:
        alert["id"] = monitor.record_alert(name, alert["kind"], alert["message"], alert["data"])
    report["alerts"] = alerts
    return report
