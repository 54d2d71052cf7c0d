"""The evaluation report: metrics with intervals, paired comparisons, and the files that hold them.

Owns: turning scored models (predictions plus per-example statistics) into an `EvalReport` and its
files: `report.json`, `report.md`, `predictions.jsonl` (one line per example and model, with its
statistics, so reports can be recombined and compared later without regenerating) and `report.html`
(drawn by `report_html`); and combining evaluations of the same data made at different times. Does not
own: running models, or the report's shape and number format (see `records`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import EvalTask
from tunesmith.eval.metrics import per_class
from tunesmith.eval.records import (
    ClassScores,
    Comparison,
    DataInfo,
    EvalReport,
    EvalSettings,
    MetricInterval,
    ModelScores,
    ScoredModel,
    format_interval,
    format_number,
)
from tunesmith.eval.report_html import render_html
from tunesmith.eval.stats import bootstrap_interval, paired_test, resample_indices
from tunesmith.eval.tasks import aggregates
from tunesmith.train.rundir import atomic_write_text


def build_report(
    task: EvalTask,
    scored: list[ScoredModel],
    data: DataInfo,
    settings: EvalSettings,
    labels: list[str] | None,
    out_of_scope_label: str | None = None,
) -> EvalReport:
    """Every metric with its bootstrap interval, and every later model compared with every earlier one.

    `out_of_scope_label`: classification's "none of these" label, one of `labels`, when it has one.
    """
    names = list(scored[0].statistics)
    out_of_scope = labels.index(out_of_scope_label) if labels and out_of_scope_label else None
    table = aggregates(task, names, len(labels or []), out_of_scope)
    indices = resample_indices(len(scored[0].predictions), settings.bootstrap_samples)
    models = []
    for model in scored:
        entry = ModelScores(
            name=model.name,
            base_model=model.base_model,
            adapter=model.adapter,
            shots=model.shots,
            metrics={
                name: MetricInterval(
                    **bootstrap_interval(model.statistics[name], table[name], indices).to_dict()
                )
                for name in names
            },
            examples_per_second=round(len(model.predictions) / max(model.seconds, 1e-9), 3),
            decoding=model.decoding,
            out_of_scope_threshold=model.out_of_scope_threshold,
        )
        if task == EvalTask.classification and labels is not None:
            entry.per_class, entry.confusion_matrix = _classification_tables(
                model.statistics[names[0]], labels
            )
        models.append(entry)
    comparisons = []
    for later in range(1, len(scored)):
        for earlier in range(later):
            for name in names:
                result = paired_test(
                    scored[later].statistics[name], scored[earlier].statistics[name], table[name], indices
                )
                comparisons.append(
                    Comparison(
                        model=scored[later].name,
                        reference=scored[earlier].name,
                        metric=name,
                        difference=result.difference,
                        ci_low=result.ci_low,
                        ci_high=result.ci_high,
                        p_value=result.p_value,
                        verdict=str(result.verdict),
                    )
                )
    return EvalReport(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        task=str(task),
        data=data,
        settings=settings,
        models=models,
        comparisons=comparisons,
        labels=labels,
        out_of_scope_label=out_of_scope_label,
    )


def _classification_tables(
    stats: np.ndarray, labels: list[str]
) -> tuple[dict[str, ClassScores], list[list[int]]]:
    table = per_class(stats, len(labels))
    counts = np.bincount(stats[:, 0] * len(labels) + stats[:, 1], minlength=len(labels) ** 2)
    scores = {
        label: ClassScores(
            **{key: float(table[key][index]) for key in ("precision", "recall", "f1", "support")}
        )
        for index, label in enumerate(labels)
    }
    return scores, counts.reshape(len(labels), len(labels)).tolist()


def per_example_scores(task: EvalTask, model: ScoredModel, metric: str, num_labels: int) -> list[float]:
    """The metric on each example alone (sentence-level for corpus metrics)."""
    aggregate = aggregates(task, [metric], num_labels)[metric]
    stats = model.statistics[metric]
    return [aggregate(stats[index : index + 1]) for index in range(len(stats))]


def write_report(
    report: EvalReport,
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
    atomic_write_text(out / "report.json", json.dumps(report.to_json(), indent=2) + "\n")
    atomic_write_text(out / "report.md", render_markdown(report))
    atomic_write_text(out / "report.html", render_html(report, scored, references))


def read_scored(source: Path) -> tuple[EvalReport, list[ScoredModel], list[list[str]], list[str]]:
    """An evaluation folder back as its report, scored models, references and example sources."""
    report = EvalReport.model_validate_json((source / "report.json").read_text(encoding="utf-8"))
    rows: dict[str, list[dict[str, Any]]] = {}
    for line in (source / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows.setdefault(row["model"], []).append(row)
    scored = []
    for entry in report.models:
        group = sorted(rows[entry.name], key=lambda row: row["index"])
        scored.append(
            ScoredModel(
                name=entry.name,
                base_model=entry.base_model,
                adapter=entry.adapter,
                shots=entry.shots,
                prompts=[row["prompt"] for row in group],
                predictions=[row["prediction"] for row in group],
                statistics={
                    name: np.array([row["statistics"][name] for row in group]) for name in entry.metrics
                },
                seconds=len(group) / entry.examples_per_second,
                decoding=entry.decoding or report.settings.decoding,
                out_of_scope_threshold=entry.out_of_scope_threshold,
            )
        )
    first = sorted(rows[report.models[0].name], key=lambda row: row["index"])
    return report, scored, [row["references"] for row in first], [row["source"] for row in first]


def combine_reports(sources: list[Path], out: Path) -> dict[str, Any]:
    """One report (intervals and comparisons recomputed) from evaluations of the same data and task.

    Returns report.json's payload.
    """
    parts = [read_scored(source) for source in sources]
    reports = [part[0] for part in parts]
    if len({report.data.hash for report in reports}) != 1:
        raise ValueError("cannot combine evaluations of different data")
    if len({report.task for report in reports}) != 1:
        raise ValueError("cannot combine evaluations of different tasks")
    last = reports[-1]
    scored = [model for part in parts for model in part[1]]
    if len({report.out_of_scope_label for report in reports}) != 1:
        raise ValueError("cannot combine evaluations with different out-of-scope labels")
    report = build_report(
        EvalTask(last.task), scored, last.data, last.settings, last.labels, last.out_of_scope_label
    )
    write_report(report, scored, parts[-1][2], parts[-1][3], out)
    return report.to_json()


def render_markdown(report: EvalReport) -> str:
    """Metrics (value and 95% interval) per model, then the paired comparisons with verdicts."""
    names = report.metric_names
    data = report.data
    lines = [
        "# Evaluation report",
        "",
        f"Task: {report.task}. Data: `{data.path}` ({data.examples} examples, sha256 "
        f"`{data.hash[:12]}`). Intervals: 95% bootstrap, {report.settings.bootstrap_samples} resamples.",
        "",
        "| model | " + " | ".join(names) + " | decoding |",
        "|---|" + "---|" * len(names) + "---|",
    ]
    if report.out_of_scope_label is not None:
        thresholds = ", ".join(f"{m.name} {m.out_of_scope_threshold:.3f}" for m in report.models)
        lines[-2:-2] = [
            f"Out of scope: a prediction whose log-likelihood is below the model's threshold, calibrated on "
            f"validation examples, is `{report.out_of_scope_label}` ({thresholds}).",
            "",
        ]
    for entry in report.models:
        cells = [
            format_interval(m.value, m.ci_low, m.ci_high) for m in (entry.metrics[name] for name in names)
        ]
        lines.append(
            f"| {entry.name} | " + " | ".join(cells) + f" | {entry.decoding or report.settings.decoding} |"
        )
    if report.comparisons:
        lines += [
            "",
            "## Paired comparisons",
            "",
            "| model | vs | metric | difference [95% CI] | p | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for row in report.comparisons:
            difference = format_interval(row.difference, row.ci_low, row.ci_high, signed=True)
            lines.append(
                f"| {row.model} | {row.reference} | {row.metric} | {difference} "
                f"| {format_number(row.p_value)} | {row.verdict} |"
            )
    return "\n".join(lines) + "\n"
