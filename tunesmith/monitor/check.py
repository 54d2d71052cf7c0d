"""One monitoring pass over a deployment (`tunesmith monitor check`): input drift, output, language and
quality signals (a sampled judge score), latency, and the alerts they raise, stored in the registry.

Owns: choosing the windows (the latest `window` requests, the `window` before them) and the reference
(the training prompts of the heaviest variant's adapter, when its run names a dataset), leaving out of
the text-based signals the requests logged without their text (a tenant whose request log is `off`),
running the tests in `drift`, `signals`, `language` and `quality`, reading the A/B verdict of a split
deployment (`ab`), and recording alerts. Does not own: the statistics or the queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tunesmith.config import ConfigError
from tunesmith.data.readers import read_rows
from tunesmith.monitor.ab import load_ab_report
from tunesmith.monitor.drift import DRIFT_ALARM, hashed_bag_of_words, permutation_drift_test
from tunesmith.monitor.language import compare_languages, language_signals
from tunesmith.monitor.signals import compare_windows, window_signals
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_records import Caller, DeploymentDetail
from tunesmith.registry.serving_store import NotFoundError, ServingStore, parse_model_ref
from tunesmith.registry.store import Registry

if TYPE_CHECKING:  # the judge imports transformers: loaded only when a pass is judged
    from tunesmith.monitor.quality import SampledJudge

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
    return {"test": "words", "against": against, "p_value": p_value, "statistic": statistic,
            "alarm": p_value < DRIFT_ALARM}  # fmt: skip


def _embedding_drift(
    registry: Registry, variants: list[str], pairs: list[tuple[list[str], str]], window: list[str]
) -> list[dict[str, Any]]:
    """The same test on the base model's mean-pooled hidden states (loads the base model of the first
    adapter variant; the base variant alone does not say which model that is)."""
    from tunesmith.models.loading import load_model, load_tokenizer, resolve_model
    from tunesmith.monitor.embed import embed_texts

    adapters = [model for model in variants if model != "base"]
    if not adapters:
        raise ConfigError("--embeddings: the deployment has no adapter variant to name its base model")
    adapter = ServingStore(registry).find_adapter(
        Caller(tenant=None, is_admin=True), *parse_model_ref(adapters[0])
    )
    path = resolve_model(adapter.base_model)
    model, tokenizer = load_model(path), load_tokenizer(path)
    model.eval()
    current = embed_texts(model, tokenizer, window)
    results = []
    for reference, against in pairs:
        p_value, statistic = permutation_drift_test(embed_texts(model, tokenizer, reference), current)
        results.append({"test": "embeddings", "against": against, "p_value": p_value, "statistic": statistic,
                        "alarm": p_value < DRIFT_ALARM})  # fmt: skip
    return results


def _ab_alerts(registry: Registry, name: str) -> list[dict[str, Any]]:
    """Alerts from the A/B report: a sample-ratio mismatch, and every metric on which a variant is
    significantly worse than the control (the signal a canary is watched for)."""
    report = load_ab_report(registry, name)
    alerts = []
    if report["sample_ratio"]["mismatch"]:
        alerts.append({"kind": "sample_ratio_mismatch", "data": report["sample_ratio"],
                       "message": f"traffic split does not match the weights (p={report['sample_ratio']['p_value']:.2g})"})  # fmt: skip
    for variant in report["variants"]:
        for metric, comparison in variant.get("versus_control", {}).items():
            if comparison["verdict"] == "worse":
                alerts.append({
                    "kind": "ab_worse", "data": {"variant": variant["model"], "metric": metric, **comparison},
                    "message": f"{variant['model']} is worse than {report['control']} on {metric} "
                    f"({comparison['difference']:+.3f}, always-valid p={comparison['p_value']:.2g})",
                })  # fmt: skip
    return alerts


def _texts(logged: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(prompt_text(request["prompt"]), request["outputs"]) for request in logged]


def _input_drift(
    registry: Registry, deployment: DeploymentDetail, texts: list[str], before: list[str], embeddings: bool
) -> list[dict[str, Any]]:
    """Drift of this window's prompts from the heaviest variant's training prompts and the window before."""
    if len(texts) < 2:
        return []
    heaviest = max(deployment["variants"], key=lambda variant: variant["weight"])["model"]
    reference, path = _training_prompts(registry, heaviest)
    pairs = []
    if len(reference) >= 2:
        pairs.append((reference, f"training data of {heaviest} ({path})"))
    if len(before) >= 2:
        pairs.append((before, "previous window"))
    drift = [_drift(reference, texts, against) for reference, against in pairs]
    if embeddings and pairs:
        drift += _embedding_drift(
            registry, [variant["model"] for variant in deployment["variants"]], pairs, texts
        )
    return drift


def _judge_windows(
    judge: SampledJudge, logged: list[dict[str, Any]], before: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The judge's score of a sample of each window's first answers, and the alert if it fell."""
    from tunesmith.monitor.quality import compare_judge_scores, judge_sample

    def score(requests: list[dict[str, Any]]) -> dict[str, Any] | None:
        texts = [(question, outputs) for question, outputs in _texts(requests) if outputs]
        if not texts:
            return None
        return judge_sample(judge, [question for question, _ in texts], [outputs[0] for _, outputs in texts])

    current, previous = score(logged), score(before)
    alerts = compare_judge_scores(current, previous, judge.seed) if current and previous else []
    return {"rubric": list(judge.criteria), "current": current, "previous": previous}, alerts


def monitor_deployment(
    registry: Registry,
    name: str,
    window: int = 1000,
    embeddings: bool = False,
    judge: SampledJudge | None = None,
) -> dict[str, Any]:
    """Signals of deployment `name`'s latest `window` requests against its training data and the window
    before; with `embeddings`, drift on the base model's hidden states too; with `judge`, the judge's
    score of a sample of each window's answers. Requests logged without their text (the tenant's request
    log is `off`) count in the rates and latency but not in drift, language or judge (`not_logged`).
    Every alert is stored (`tunesmith monitor alerts`) and returned."""
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
    logged = [request for request in current if request["prompt"]]  # `off` logs the prompt as {}
    before = [request for request in previous if request["prompt"]]
    report["not_logged"] = len(current) - len(logged)
    texts, before_texts = _texts(logged), _texts(before)
    prompts = [prompt for prompt, _ in texts]
    report["drift"] = _input_drift(registry, deployment, prompts, [p for p, _ in before_texts], embeddings)
    report["signals"] = window_signals(current)
    report["languages"] = language_signals(texts)
    alerts = compare_windows(report["signals"], window_signals(previous)) if previous else []
    alerts += [
        {"kind": "input_drift",
         "message": f"prompts differ from the {test['against']} by {test['test']} (p={test['p_value']:.3g})",
         "data": test}
        for test in report["drift"] if test["alarm"]
    ]  # fmt: skip
    if before:
        alerts += compare_languages(report["languages"], language_signals(before_texts))
    if judge is not None:
        report["judge"], judge_alerts = _judge_windows(judge, logged, before)
        alerts += judge_alerts
    if len(deployment["variants"]) > 1:
        alerts += _ab_alerts(registry, name)
    for alert in alerts:
        alert["id"] = monitor.record_alert(name, alert["kind"], alert["message"], alert["data"])
    report["alerts"] = alerts
    return report
