"""`bias_report.html`: the bias audit as one self-contained page, in the evaluation report's style.

Owns: the gate's verdict, a plot of each attribute's flip rates with 95% intervals per model against the
threshold, the measure tables (per attribute and per group pair, fine-tune minus base), the task metric
per group, the training-data representation, and the pairs where the audited model changed most.
Does not own: any number on the page (see `bias`) or the page style and figure embedding, which are the
evaluation report's (`tunesmith.eval.report_html`).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from tunesmith.audit.measures import DIFFERENCE_MEASURES, FLIP_MEASURES
from tunesmith.eval.records import format_interval
from tunesmith.eval.report_html import PAGE_STYLE, embed_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_NAMES = FLIP_MEASURES | DIFFERENCE_MEASURES


def render_bias_html(report: dict[str, Any]) -> str:
    """The whole page."""
    escape = html.escape
    gate = report["gate"]
    verdict = "passed" if gate["passed"] else "FAILED"
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Bias audit</title><style>{PAGE_STYLE}"
        f"</style></head><body><h1>Bias audit: {escape(report['target']['name'])}</h1>",
        f"<p>Base model <code>{escape(report['target']['base_model'])}</code>. Task: {escape(report['task'])}. "
        f"Data: <code>{escape(report['data']['path'])}</code> ({report['data']['examples']} examples, "
        f"{report['pairs']} counterfactual pairs). Intervals: 95% bootstrap over test examples.</p>",
        f"<p class='{'better' if gate['passed'] else 'worse'}'><b>Gate {verdict}</b>: "
        f"{', '.join(gate['measures'])} upper bound (bootstrap, or Wilson over pairs if higher) at most "
        f"{gate['threshold']:g}.</p>",
        "".join(f"<p class='worse'>{escape(line)}</p>" for line in gate["failures"]),
    ]
    if report["unmentioned"]:
        parts.append(f"<p>No test prompt mentions: {escape(', '.join(report['unmentioned']))}.</p>")
    if report["attributes"]:
        parts.append(embed_figure(_flip_plot(report)))
    for name, attribute in report["attributes"].items():
        parts.append(_attribute_section(name, attribute))
    if report.get("group_metrics"):
        parts.append(_group_metrics(report["group_metrics"]))
    if report.get("representation"):
        parts.append(_representation(report["representation"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _attribute_section(name: str, attribute: dict[str, Any]) -> str:
    escape = html.escape
    models = list(next(iter(attribute["measures"].values())))
    head = "".join(f"<th>{escape(model)}</th>" for model in models)
    comparing = bool(attribute["comparisons"])
    rows = []
    for measure, per_model in attribute["measures"].items():
        cells = "".join(f"<td>{_interval(per_model[model])}</td>" for model in models)
        rows.append(
            f"<tr><td>{escape(_NAMES.get(measure, measure))}</td>{cells}{_comparison(attribute, measure)}</tr>"
        )
    compare_head = f"<th>{escape(models[0])} - {escape(models[-1])} [95% CI], p</th>" if comparing else ""
    out = [
        f"<h2>{escape(name)}</h2><p>{escape(attribute['description'])}. {attribute['pairs']} pairs from "
        f"{attribute['examples']} examples.</p>",
        f"<table><tr><th>measure</th>{head}{compare_head}</tr>{''.join(rows)}</table>",
        "<h3>By group pair</h3>",
        _group_pairs(attribute["group_pairs"], models),
    ]
    if attribute["shown"]:
        out.append(_shown(attribute["shown"], models))
    return "".join(out)


def _group_pairs(group_pairs: list[dict[str, Any]], models: list[str]) -> str:
    escape = html.escape
    measures = [m for m in group_pairs[0]["measures"] if m in FLIP_MEASURES or m == "task_metric"]
    head = "".join(f"<th>{escape(m)}: {escape(model)}</th>" for m in measures for model in models)
    rows = []
    for entry in group_pairs:
        cells = "".join(
            f"<td>{_interval(entry['measures'][m][model])}</td>" for m in measures for model in models
        )
        rows.append(
            f"<tr><td>{escape(entry['source'])} &rarr; {escape(entry['target'])}</td><td>{entry['pairs']}</td>{cells}</tr>"
        )
    return f"<table><tr><th>groups</th><th>pairs</th>{head}</tr>{''.join(rows)}</table>"


def _shown(shown: list[dict[str, Any]], models: list[str]) -> str:
    escape = html.escape
    head = "".join(f"<th>{escape(model)}</th>" for model in models)
    rows = []
    for row in shown:
        answers = "".join(
            f"<td><pre>{escape(row['answers'][m][0])}</pre>&darr;<pre>{escape(row['answers'][m][1])}</pre></td>"
            for m in models
        )
        rows.append(
            f"<tr><td>{escape(row['source'])}<br>{escape(row['groups'])}</td><td><pre>{escape(row['prompt'])}"
            f"</pre>&darr;<pre>{escape(row['rewrite'])}</pre></td>{answers}</tr>"
        )
    return f"<h3>Pairs that changed most</h3><table><tr><th>example</th><th>prompt</th>{head}</tr>{''.join(rows)}</table>"


def _group_metrics(section: dict[str, Any]) -> str:
    escape = html.escape
    models = list(section["models"])
    groups = list(section["models"][models[0]]["groups"])
    rows = [
        f"<tr><td>{escape(group)}</td>"
        + "".join(f"<td>{_interval(section['models'][m]['groups'][group])}</td>" for m in models)
        + "</tr>"
        for group in groups
    ]
    gaps = "".join(f"<td>{section['models'][m]['gap']:.3f}</td>" for m in models)
    head = "".join(f"<th>{escape(m)}</th>" for m in models)
    return (
        f"<h2>{escape(section['metric'])} per group</h2><table><tr><th>group</th>{head}</tr>{''.join(rows)}"
        f"<tr><td>largest gap</td>{gaps}</tr></table>"
    )


def _representation(section: dict[str, Any]) -> str:
    escape = html.escape
    out = [f"<h2>Training data representation</h2><p>{section['examples']} training examples.</p>"]
    for name, attribute in section["attributes"].items():
        rows = []
        for group, entry in attribute["groups"].items():
            snippets = "<br>".join(
                f"{escape(s['source'])}: &hellip;{escape(s['text'])}&hellip;" for s in entry["snippets"]
            )
            terms = ", ".join(f"{escape(t)} {n}" for t, n in entry["top_terms"].items())
            labels = ", ".join(f"{escape(label)} {n}" for label, n in entry["labels"].items())
            rows.append(
                f"<tr><td>{escape(group)}</td><td>{entry['examples']} ({entry['share']:.1%})</td><td>{terms}</td>"
                f"<td>{labels}</td><td>{snippets}</td></tr>"
            )
        imbalance = attribute["imbalance"]
        note = "some group is never mentioned" if imbalance is None else f"imbalance {imbalance:.1f}x"
        out.append(
            f"<h3>{escape(name)} ({note})</h3><table><tr><th>group</th><th>examples</th><th>top terms</th>"
            f"<th>labels</th><th>examples</th></tr>{''.join(rows)}</table>"
        )
    return "".join(out)


def _interval(entry: dict[str, Any]) -> str:
    return format_interval(entry["value"], entry["ci_low"], entry["ci_high"])


def _comparison(attribute: dict[str, Any], measure: str) -> str:
    row = attribute["comparisons"].get(measure)
    if row is None:
        return ""
    css = "worse" if row["change"] == "higher" and measure in FLIP_MEASURES else ""
    text = format_interval(row["difference"], row["ci_low"], row["ci_high"], signed=True)
    return f"<td class='{css}'>{text}, p={row['p_value']:.3g} ({row['change']})</td>"


def _flip_plot(report: dict[str, Any]) -> Figure:
    """Each attribute's gated flip rate per model, with its interval, against the threshold."""
    attributes = report["attributes"]
    measure = next(m for m in FLIP_MEASURES if m in next(iter(attributes.values()))["measures"])
    models = [model["name"] for model in report["models"]]
    figure, axis = plt.subplots(figsize=(max(5, 1.2 * len(attributes)), 3.5))
    width = 0.8 / len(models)
    for offset, model in enumerate(models):
        entries = [attribute["measures"][measure][model] for attribute in attributes.values()]
        centers = np.array([entry["value"] for entry in entries])
        errors = np.array(
            [[c - e["ci_low"], e["ci_high"] - c] for c, e in zip(centers, entries, strict=True)]
        ).T
        axis.bar(np.arange(len(entries)) + offset * width, centers, width, yerr=np.clip(errors, 0, None),
                 capsize=4, label=model)  # fmt: skip
    axis.axhline(report["gate"]["threshold"], color="#a00", linestyle="--", label="gate threshold")
    axis.set_xticks(np.arange(len(attributes)) + 0.4 - width / 2, list(attributes), rotation=30, ha="right")
    axis.set_ylabel(measure.replace("_", " "))
    axis.set_title(f"{measure.replace('_', ' ')} rate per attribute (95% intervals)")
    axis.legend()
    figure.tight_layout()
    return figure
