"""The evaluation report: metrics with intervals, paired comparisons, and the files that hold them.

Owns: turning scored models (predictions plus per-example statistics) into `report.json` (a `models`
list, each with `name` and flat `metrics` of `{"value", "ci_low", "ci_high"}`, plus `comparisons`),
`report.md`, `predictions.jsonl` (one line per example and model, with its statistics, so reports
can be recombined and compared later without regenerating) and `report.html`; and combining
evaluations of the same data made at different times. Does not own: running models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import EvalTask
from tunesmith.eval.metrics import per_class
from tunesmith.eval.report_html import render_html
from tunesmith.eval.stats import bootstrap_interval, paired_test, resample_indices
from tunesmith.eval.tasks import aggregates
from tunesmith.train.rundir import atomic_write_text


@dataclass
class ScoredModel:
    """One model's outputs on the test set and each metric's per-example statistics."""

    name: str
    base_model: str
    adapter: str | None
    shots: int | None  # None: the test prompt as is; 0: zero-shot baseline; k: k demonstrations
    prompts: list[str]
    predictions: list[str]
    statistics: dict[str, np.ndarray]  # metric -> (N, K)
    seconds: float


def build_report(
    task: EvalTask,
    scored: list[ScoredModel],
    data: dict[str, Any],
    settings: dict[str, Any],
    labels: list[str] | None,
    samples: int,
) -> dict[str, Any]:
    """Every metric with its bootstrap interval, and every later model compared with every earlier one."""
    names = list(scored[0].statistics)
    table = aggregates(task, names, len(labels or []))
    indices = resample_indices(len(scored[0].predictions), samples)
    models = []
    for model in scored:
        entry: dict[str, Any] = {
            "name": model.name,
            "base_model": model.base_model,
            "adapter": model.adapter,
            "shots": model.shots,
            "metrics": {
                name: bootstrap_interval(model.statistics[name], table[name], indices).to_dict()
                for name in names
            },
            "examples_per_second": round(len(model.predictions) / max(model.seconds, 1e-9), 3),
        }
        if task == EvalTask.classification and labels is not None:
            entry.update(_classification_tables(model.statistics[names[0]], labels))
        models.append(entry)
    comparisons = []
    for later in range(1, len(scored)):
        for earlier in range(later):
            for name in names:
                result = paired_test(
                    scored[later].statistics[name], scored[earlier].statistics[name], table[name], indices
                )
                comparisons.append(
                    {
                        "model": scored[later].name,
                        "reference": scored[earlier].name,
                        "metric": name,
                        "difference": result.difference,
                        "ci_low": result.ci_low,
                        "ci_high": result.ci_high,
                        "p_value": result.p_value,
                        "verdict": str(result.verdict),
                    }
                )
    report: dict[str, Any] = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "task": str(task),
        "data": data,
        "settings": {**settings, "bootstrap_samples": samples, "confidence": 0.95},
        "models": models,
        "comparisons": comparisons,
    }
    if labels is not None:
        report["labels"] = labels
    return report


def _classification_tables(stats: np.ndarray, labels: list[str]) -> dict[str, Any]:
    table = per_class(stats, len(labels))
    counts = np.bincount(stats[:, 0] * len(labels) + stats[:, 1], minlength=len(labels) ** 2)
    return {
        "per_class": {
            label: {key: float(table[key][index]) for key in ("precision", "recall", "f1", "support")}
            for index, label in enumerate(labels)
        },
        "confusion_matrix": counts.reshape(len(labels), len(labels)).tolist(),
    }


def per_example_scores(task: EvalTask, model: ScoredModel, metric: str, num_labels: int) -> list[float]:
    """The metric on each example alone (sentence-level for corpus metrics)."""
    aggregate = aggregates(task, [metric], num_labels)[metric]
    stats = model.statistics[metric]
    return [aggregate(stats[index : index + 1]) for index in range(len(stats))]


def write_report(
    report: dict[str, Any],
    scored: list[ScoredModel],
    references: list[list[str]],
    sources: list[str],
    out: Path,
) -> None:
    """report.json, report.md, report.html and predictions.jsonl, each written atomically."""
    lines = []
    for model in scored:
        for index, (prompt, prediction) in enumerate(zip(model.prompts, model.predictions, strict=True)):
            line = {
                "index": index,
                "source": sources[index],
                "model": model.name,
                "prompt": prompt,
                "prediction": prediction,
                "reference": references[index][0],
                "references": references[index],
                "statistics": {name: stats[index].tolist() for name, stats in model.statistics.items()},
            }
            lines.append(json.dumps(line, ensure_ascii=False))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", render_markdown(report))
    atomic_write_text(out / "report.html", render_html(report, scored, references))


def read_scored(source: Path) -> tuple[dict[str, Any], list[ScoredModel], list[list[str]], list[str]]:
    """An evaluation folder back as its report, scored models, references and example sources."""
    report = json.loads((source / "report.json").read_text(encoding="utf-8"))
    rows: dict[str, list[dict[str, Any]]] = {}
    for line in (source / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows.setdefault(row["model"], []).append(row)
    scored = []
    for entry in report["models"]:
        group = sorted(rows[entry["name"]], key=lambda row: row["index"])
        scored.append(
            ScoredModel(
                name=entry["name"],
                base_model=entry["base_model"],
                adapter=entry["adapter"],
                shots=entry.get("shots"),
                prompts=[row["prompt"] for row in group],
                predictions=[row["prediction"] for row in group],
                statistics={
                    name: np.array([row["statistics"][name] for row in group]) for name in entry["metrics"]
                },
                seconds=len(group) / entry["examples_per_second"],
            )
        )
    first = sorted(rows[report["models"][0]["name"]], key=lambda row: row["index"])
    return report, scored, [row["references"] for row in first], [row["source"] for row in first]


def combine_reports(sources: list[Path], out: Path) -> dict[str, Any]:
    """One report (intervals and comparisons recomputed) from evaluations of the same data and task."""
    parts = [read_scored(source) for source in sources]
    reports = [part[0] for part in parts]
    if len({report["data"]["hash"] for report in reports}) != 1:
        raise ValueError("cannot combine evaluations of different data")
    if len({report["task"] for report in reports}) != 1:
        raise ValueError("cannot combine evaluations of different tasks")
    last = reports[-1]
    scored = [model for part in parts for model in part[1]]
    report = build_report(
        EvalTask(last["task"]),
        scored,
        last["data"],
        {
            key: value
            for key, value in last["settings"].items()
            if key not in ("bootstrap_samples", "confidence")
        },
        last.get("labels"),
        last["settings"]["bootstrap_samples"],
    )
    write_report(report, scored, parts[-1][2], parts[-1][3], out)
    return report


def render_markdown(report: dict[str, Any]) -> str:
    """Metrics (value and 95% interval) per model, then the paired comparisons with verdicts."""
    names = list(report["models"][0]["metrics"]) if report["models"] else []
    data = report["data"]
    lines = [
        "# Evaluation report",
        "",
        f"Task: {report['task']}. Data: `{data['path']}` ({data['examples']} examples, sha256 "
        f"`{data['hash'][:12]}`). Intervals: 95% bootstrap, {report['settings']['bootstrap_samples']} resamples.",
        "",
        "| model | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for entry in report["models"]:
        cells = [_format_interval(entry["metrics"][name]) for name in names]
        lines.append(f"| {entry['name']} | " + " | ".join(cells) + " |")
    if report["comparisons"]:
        lines += [
            "",
            "## Paired comparisons",
            "",
            "| model | vs | metric | difference [95% CI] | p | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for row in report["comparisons"]:
            lines.append(
                f"| {row['model']} | {row['reference']} | {row['metric']} | {row['difference']:+.4f} "
                f"[{row['ci_low']:+.4f}, {row['ci_high']:+.4f}] | {row['p_value']:.4f} | {row['verdict']} |"
            )
    return "\n".join(lines) + "\n"


def _format_interval(metric: dict[str, float]) -> str:
    return f"{metric['value']:.4f} [{metric['ci_low']:.4f}, {metric['ci_high']:.4f}]"
