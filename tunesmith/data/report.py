"""The self-contained HTML report of a prepared dataset: tables and charts, no network needed.

Owns: rendering `report.json`'s content as one HTML file with matplotlib charts embedded as base64
PNG (rows per step, token lengths against the context window, label balance, turns per
conversation) and tables (steps, removed-row samples, near-duplicate clusters, leaks, cost
estimate). Does not own: computing any of it (see `prepare`).
"""

from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path
from typing import Any

_MAX_LISTED = 200  # removed rows listed per step in the HTML (report.json lists them all)
_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{white-space:pre-wrap;margin:0;font-size:12px;max-height:12em;overflow:auto}
.charts img{max-width:49%} details{margin:.3em 0 1em} .muted{color:#777}
"""


def write_html_report(report: dict[str, Any], path: Path) -> None:
    """Write `report` (the content of report.json) as a self-contained HTML page."""
    path.write_text(render_html(report), encoding="utf-8")


def render_html(report: dict[str, Any]) -> str:
    steps = report["steps"]
    rows_in, rows_out = steps[0]["rows_in"], sum(report["splits"].values())
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>tunesmith dataset {escape(report['hash'][:12])}"
        f"</title><style>{_STYLE}</style></head><body>",
        f"<h1>Prepared dataset <code>{escape(report['hash'][:12])}</code></h1>",
        f"<p>{rows_in:,} rows read, <b>{rows_out:,} kept</b> ({escape(report['kind'])} form), "
        f"split {_splits_text(report['splits'])}; model <code>{escape(str(report['model']))}</code>; "
        f"prepared in {report['seconds']:.1f} s. Full hash <code>{escape(report['hash'])}</code>.</p>",
        "<div class='charts'>",
        _img(_chart_steps(steps), "rows per step"),
        _img(_chart_lengths(report["tokens"]), "token lengths"),
    ]
    if report["labels"]:
        parts.append(_img(_chart_labels(report["labels"]), "label balance"))
    if report["turns"]:
        parts.append(_img(_chart_turns(report["turns"]), "turns per conversation"))
    parts.append("</div>")
    parts += [_steps_table(steps), _tokens_section(report["tokens"]), _estimate_section(report["estimate"])]
    parts += [_clusters_section(report["clusters"]), _leaks_section(report["leaks"]), _removed_section(steps)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _splits_text(splits: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in splits.items())


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        text = f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
        return f"<td class='n'>{text}</td>"
    return f"<td>{value if isinstance(value, _Html) else escape(str(value))}</td>"


class _Html(str):
    """Text already escaped."""


def _steps_table(steps: list[dict[str, Any]]) -> str:
    rows = []
    for step in steps:
        reasons = "; ".join(f"{kind}: {count:,}" for kind, count in step["removed_by_reason"].items())
        changed = "; ".join(f"{kind}: {count:,}" for kind, count in step["changed"].items())
        params = ", ".join(f"{k}={v}" for k, v in step["params"].items())
        rows.append([step["name"], step["rows_in"], step["rows_out"], reasons or "—", changed or "—", params])
    header = ["step", "rows in", "rows out", "removed (by reason)", "changed", "parameters"]
    return "<h2>Steps</h2>" + _table(header, rows)


def _tokens_section(tokens: dict[str, Any]) -> str:
    rows = [
        ["total tokens", tokens["total"]],
        ["loss-bearing (assistant) tokens", tokens["loss_bearing"]],
        ["loss-bearing share", f"{tokens['loss_share']:.1%}"],
        ["mean / median / p95 / max per example", f"{tokens['mean']:.0f} / {tokens['p50']:.0f} / "
         f"{tokens['p95']:.0f} / {tokens['max']}"],
        ["model context length", tokens["context_length"] or "unknown"],
    ]  # fmt: skip
    return "<h2>Tokens</h2>" + _table(["", ""], rows)


def _estimate_section(estimate: dict[str, Any]) -> str:
    minutes = estimate["cpu_minutes"]
    here = format_hours(minutes / 60) if minutes is not None else "not measured"
    speed = estimate["cpu_tokens_per_second"]
    intro = (
        f"<p>{estimate['train_tokens']:,} training tokens × {estimate['epochs']:g} epochs = "
        f"{estimate['total_tokens']:,.0f} tokens, {estimate['method']} on a {estimate['parameters'] / 1e6:,.0f}M"
        f"-parameter model ({estimate['training_flops']:.3g} FLOPs). <b>This machine: {here}</b>"
        + (f" at {speed:,.0f} tokens/s ({escape(estimate['cpu_throughput_source'])})" if speed else "")
        + ".</p>"
    )
    rows = [
        [gpu["name"], gpu["price_per_hour"], f"{gpu['bf16_tflops']:,.0f}", gpu["mfu"], format_hours(gpu["hours"]),
         format_dollars(gpu["dollars"])]
        for gpu in estimate["gpus"]
    ]  # fmt: skip
    header = ["GPU", "$/hour", "bf16 TFLOPS", "assumed MFU", "time", "cost"]
    note = "<p class='muted'>Prices and MFU come from an editable table (--gpu-prices).</p>"
    return "<h2>Training cost estimate</h2>" + intro + _table(header, rows) + note


def format_hours(hours: float) -> str:
    """A duration a person reads at a glance: seconds, minutes or hours."""
    if hours < 1 / 60:
        return f"{hours * 3600:,.0f} s"
    return f"{hours * 60:,.1f} min" if hours < 1 else f"{hours:,.1f} h"


def format_dollars(dollars: float) -> str:
    return f"${dollars:,.2f}" if dollars >= 0.01 else f"${dollars:.4f}"


def _clusters_section(clusters: list[dict[str, Any]]) -> str:
    if not clusters:
        return "<h2>Near-duplicate clusters</h2><p>None found.</p>"
    rows = [
        [cluster["size"], cluster["kept"], _Html("".join(
            f"<pre>{escape(m['source'])}: {escape(m['text'])}</pre>" for m in cluster["members"]
        ))]
        for cluster in clusters[:10]
    ]  # fmt: skip
    return "<h2>Near-duplicate clusters (largest)</h2>" + _table(["size", "kept", "members"], rows)


def _leaks_section(leaks: list[dict[str, Any]]) -> str:
    if not leaks:
        return "<h2>Leakage across splits</h2><p>No val/test prompt repeats a prompt of an earlier split.</p>"
    rows = [
        [leak["removed"], leak["from"], leak["matches"], leak["in"], leak["similarity"]]
        for leak in leaks[:50]
    ]
    header = ["removed row", "from", "near-duplicate of", "in", "similarity"]
    return f"<h2>Leakage across splits: {len(leaks):,} rows removed</h2>" + _table(header, rows)


def _removed_section(steps: list[dict[str, Any]]) -> str:
    parts = ["<h2>Removed and changed rows</h2>"]
    for step in steps:
        if not step["removed"] and not step["samples"]:
            continue
        samples = _table(
            ["source", "why", "text"],
            [[s["source"], s["reason"], _Html(f"<pre>{escape(s['text'])}</pre>")] for s in step["samples"]],
        )
        listed = _table(
            ["source", "reason"], [[r["source"], r["reason"]] for r in step["removed"][:_MAX_LISTED]]
        )
        more = len(step["removed"]) - _MAX_LISTED
        tail = f"<p class='muted'>… and {more:,} more in report.json</p>" if more > 0 else ""
        parts.append(
            f"<details><summary><b>{escape(step['name'])}</b>: {len(step['removed']):,} removed</summary>"
            f"{samples}{listed if step['removed'] else ''}{tail}</details>"
        )
    return "\n".join(parts)


# ---------------------------------------------------------------- charts (matplotlib → base64 PNG)


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _figure() -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.4), dpi=100)


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _chart_steps(steps: list[dict[str, Any]]) -> bytes:
    figure, axes = _figure()
    names = [step["name"] for step in steps]
    axes.barh(names[::-1], [step["rows_out"] for step in steps][::-1], color="#4c78a8")
    axes.set_xlabel("rows after step")
    axes.set_title("Rows through the pipeline")
    return _png(figure)


def _chart_lengths(tokens: dict[str, Any]) -> bytes:
    figure, axes = _figure()
    edges, counts = tokens["histogram"]["edges"], tokens["histogram"]["counts"]
    axes.stairs(counts, edges, fill=True, color="#72b7b2")
    for value, label, style in (
        (tokens["context_length"], "context", "--"),
        (tokens["max_tokens"], "max", ":"),
    ):
        if value and value <= edges[-1] * 1.5:
            axes.axvline(value, color="#e45756", linestyle=style, label=f"{label} {value:,}")
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    context = tokens["context_length"]
    # A context far beyond the longest example would squash the histogram; say where it is instead.
    beyond = (
        f" (context {context:,}: {context / edges[-1]:,.0f}× the longest)"
        if context and context > edges[-1] * 1.5
        else ""
    )
    axes.set_xlabel("tokens per example (chat template included)")
    axes.set_ylabel("examples")
    axes.set_title("Token lengths" + beyond)
    return _png(figure)


def _chart_labels(labels: dict[str, dict[str, int]]) -> bytes:
    figure, axes = _figure()
    names = sorted(labels, key=lambda name: -sum(labels[name].values()))[:30]
    bottom = [0] * len(names)
    for split, color in (("train", "#4c78a8"), ("val", "#f58518"), ("test", "#54a24b")):
        values = [labels[name][split] for name in names]
        axes.bar(names, values, bottom=bottom, label=split, color=color)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    axes.tick_params(axis="x", labelrotation=90, labelsize=7)
    axes.legend()
    axes.set_title("Label balance" + (" (30 most frequent)" if len(labels) > 30 else ""))
    return _png(figure)


def _chart_turns(turns: dict[str, int]) -> bytes:
    figure, axes = _figure()
    axes.bar(list(turns), list(turns.values()), color="#b279a2")
    axes.set_xlabel("user + assistant turns")
    axes.set_ylabel("conversations")
    axes.set_title("Turns per conversation")
    return _png(figure)
