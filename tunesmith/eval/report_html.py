"""`report.html`: one self-contained page (plots embedded as PNG data URIs, no external assets).

Owns: the metric bars with 95% error bars, per-class F1 (classification), answer-length
distributions, the comparison table, and the examples where the last model gained and lost the most
against the first, every model's answer side by side. Does not own: computing metrics or intervals,
the report's shape or how its numbers are written (see `records`).
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tunesmith.config import EvalTask
from tunesmith.eval.records import EvalReport, ScoredModel, format_interval, format_number
from tunesmith.eval.tasks import aggregates

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SHOWN_EXAMPLES = 5
PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2rem;max-width:1200px}table{border-collapse:collapse;"
    "margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}"
    "pre{white-space:pre-wrap;margin:0;max-width:40ch}.better{color:#070}.worse{color:#a00}"
)


def render_html(report: EvalReport, scored: list[ScoredModel], references: list[list[str]]) -> str:
    """The whole report page."""
    names = report.metric_names
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Evaluation report</title>"
        f"<style>{PAGE_STYLE}</style></head><body><h1>Evaluation report</h1>",
        f"<p>Task: {html.escape(report.task)}. Data: <code>{html.escape(report.data.path)}</code> "
        f"({report.data.examples} examples). Error bars: 95% bootstrap intervals.</p>",
        _metrics_table(report, names),
        embed_figure(_metric_bars(report, names)),
    ]
    if report.task == EvalTask.classification:
        parts.append(embed_figure(_per_class_f1(report)))
    else:
        parts.append(embed_figure(_lengths(scored, references)))
    parts.append(_comparisons(report))
    if len(scored) > 1:
        parts.append(_extremes(report, scored, references, names[0]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _metrics_table(report: EvalReport, names: list[str]) -> str:
    head = "".join(f"<th>{html.escape(name)}</th>" for name in names)
    rows = []
    for entry in report.models:
        cells = "".join(
            f"<td>{format_interval(m.value, m.ci_low, m.ci_high)}</td>"
            for m in (entry.metrics[name] for name in names)
        )
        decoding = html.escape(entry.decoding or report.settings.decoding)
        rows.append(f"<tr><td>{html.escape(entry.name)}</td>{cells}<td>{decoding}</td></tr>")
    return f"<table><tr><th>model</th>{head}<th>decoding</th></tr>{''.join(rows)}</table>"


def _comparisons(report: EvalReport) -> str:
    if not report.comparisons:
        return ""
    rows = []
    for row in report.comparisons:
        css = row.verdict if row.verdict in ("better", "worse") else ""
        difference = format_interval(row.difference, row.ci_low, row.ci_high, signed=True)
        rows.append(
            f"<tr><td>{html.escape(row.model)}</td><td>{html.escape(row.reference)}</td>"
            f"<td>{html.escape(row.metric)}</td><td>{difference}</td><td>{format_number(row.p_value)}</td>"
            f"<td class='{css}'>{row.verdict}</td></tr>"
        )
    header = "<tr><th>model</th><th>vs</th><th>metric</th><th>difference [95% CI]</th><th>p</th><th>verdict</th></tr>"
    return f"<h2>Paired comparisons</h2><table>{header}{''.join(rows)}</table>"


def _extremes(report: EvalReport, scored: list[ScoredModel], references: list[list[str]], metric: str) -> str:
    task = EvalTask(report.task)
    aggregate = aggregates(task, [metric], len(report.labels or []))[metric]

    def scores(model: ScoredModel) -> np.ndarray:
        stats = model.statistics[metric]
        return np.array([aggregate(stats[index : index + 1]) for index in range(len(stats))])

    gain = scores(scored[-1]) - scores(scored[0])
    order = np.argsort(gain, kind="stable")
    sections = [("Largest gains", order[::-1][:SHOWN_EXAMPLES]), ("Largest losses", order[:SHOWN_EXAMPLES])]
    head = "".join(f"<th>{html.escape(model.name)}</th>" for model in scored)
    out = [f"<h2>Examples ({html.escape(scored[-1].name)} vs {html.escape(scored[0].name)}, {metric})</h2>"]
    for title, picked in sections:
        rows = []
        for index in picked:
            answers = "".join(
                f"<td><pre>{html.escape(model.predictions[index])}</pre></td>" for model in scored
            )
            rows.append(
                f"<tr><td>{format_number(gain[index], signed=True)}</td><td><pre>{html.escape(references[index][0])}</pre></td>{answers}</tr>"
            )
        out.append(
            f"<h3>{title}</h3><table><tr><th>gain</th><th>reference</th>{head}</tr>{''.join(rows)}</table>"
        )
    return "".join(out)


def _metric_bars(report: EvalReport, names: list[str]) -> Figure:
    figure, axes = plt.subplots(1, len(names), figsize=(3 * len(names), 3), squeeze=False)
    for axis, name in zip(axes[0], names, strict=True):
        values = [entry.metrics[name] for entry in report.models]
        centers = np.array([value.value for value in values])
        errors = np.array([[c - v.ci_low, v.ci_high - c] for c, v in zip(centers, values, strict=True)]).T
        positions = np.arange(len(values))
        axis.bar(positions, centers, yerr=np.clip(errors, 0, None), capsize=4, color="#4a7ab5")
        axis.set_xticks(positions, [entry.name for entry in report.models], rotation=30, ha="right")
        axis.set_title(name)
    figure.tight_layout()
    return figure


def _per_class_f1(report: EvalReport) -> Figure:
    assert report.labels is not None  # a classification report
    labels = report.labels
    figure, axis = plt.subplots(figsize=(max(6, 0.5 * len(labels)), 3.5))
    width = 0.8 / len(report.models)
    for offset, entry in enumerate(report.models):
        assert entry.per_class is not None
        values = [entry.per_class[label].f1 for label in labels]
        axis.bar(np.arange(len(labels)) + offset * width, values, width, label=entry.name)
    axis.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=45, ha="right")
    axis.set_ylabel("F1")
    axis.set_title("per-class F1")
    axis.legend()
    figure.tight_layout()
    return figure


def _lengths(scored: list[ScoredModel], references: list[list[str]]) -> Figure:
    figure, axis = plt.subplots(figsize=(6, 3))
    series = {"reference": [len(refs[0].split()) for refs in references]}
    series.update({model.name: [len(text.split()) for text in model.predictions] for model in scored})
    axis.hist(list(series.values()), bins=20, label=list(series), histtype="step")
    axis.set_xlabel("answer length (words)")
    axis.set_title("length distributions")
    axis.legend()
    figure.tight_layout()
    return figure


def embed_figure(figure: Figure) -> str:
    """The figure as an <img> with a PNG data URI (the page needs no other file); closes the figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"
