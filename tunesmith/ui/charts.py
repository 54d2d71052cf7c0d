"""Inline SVG charts for the web console: line charts (loss and learning-rate curves, runs overlaid,
traffic and feedback per variant over time) and horizontal bars (deployment weights). No torch.

Why SVG written here rather than a plotting library: the charts sit inside server-rendered pages that
must work offline and without a JavaScript bundle. `train.plots` and `eval.report_html` draw files and
self-contained reports with matplotlib (PNG); matplotlib's SVG is a standalone document (ids, clip
paths, a font path per glyph: tens of kilobytes and ~50 ms per figure), and Plotly, Bokeh and Altair
draw in the browser with a JavaScript library. A line chart is a few polylines, ticks and a legend:
this module writes them as text in a few milliseconds, with every label escaped.

Owns: scaling, "nice" ticks, thinning long series, colours, the legend, escaping. Does not own: what is
plotted (callers pass `Series`) or where a chart goes on a page.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

# Tableau 10: distinct on screen and in print; series beyond ten reuse colours in order.
PALETTE = ("#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac")  # fmt: skip
MAX_POINTS = 600  # per series: more points than pixels only make the page heavier
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 64, 16, 28, 40


@dataclass(frozen=True)
class Series:
    """One line: its legend label and its (x, y) points in x order."""

    label: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return []
    if high <= low:
        return [low]
    raw = (high - low) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(f * magnitude for f in (1, 2, 5, 10) if f * magnitude >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    """A tick label: plain for ordinary numbers, scientific for very small or large ones."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.1e}"
    return f"{value:.6g}"


def thin(points: Sequence[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """At most `limit` points, evenly strided, always keeping the last one."""
    if len(points) <= limit:
        return list(points)
    stride = math.ceil(len(points) / limit)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 600,
    height: int = 260,
) -> Markup:
    """An SVG line chart of `series` on shared axes, with a legend; "no data" when every series is empty."""
    finite = [
        Series(s.label, [(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)], s.dashed)
        for s in series
    ]
    points = [point for s in finite for point in s.points]
    legend, legend_height = _legend([(s.label, PALETTE[i % len(PALETTE)]) for i, s in enumerate(finite)],
                                    width, height)  # fmt: skip
    head = _open(width, height + legend_height, title)
    if not points:
        return Markup(f"{head}<text x='{width / 2}' y='{height / 2}' text-anchor='middle' class='empty'>no data"
                      "</text></svg>")  # fmt: skip
    scale = _Scale.fit(points, width, height)
    parts = [head, _axes(width, height, x_label, y_label), scale.ticks(width, height)]
    for index, line in enumerate(finite):
        colour = PALETTE[index % len(PALETTE)]
        coordinates = " ".join(f"{scale.x(x):.1f},{scale.y(y):.1f}" for x, y in thin(line.points))
        dash = " stroke-dasharray='5 3'" if line.dashed else ""
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.6'{dash} points='{coordinates}'>"
                     f"<title>{html.escape(line.label)}</title></polyline>")  # fmt: skip
        if len(line.points) == 1:  # a single evaluation still shows
            x, y = line.points[0]
            parts.append(f"<circle cx='{scale.x(x):.1f}' cy='{scale.y(y):.1f}' r='3' fill='{colour}'/>")
    parts.append(legend)
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class _Scale:
    """Data coordinates to the plot area's pixels (y grows downward in SVG)."""

    x_low: float
    x_high: float
    y_low: float
    y_high: float
    plot_width: float
    plot_height: float

    @classmethod
    def fit(cls, points: list[tuple[float, float]], width: int, height: int) -> _Scale:
        x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
        y_low, y_high = min(p[1] for p in points), max(p[1] for p in points)
        if y_high == y_low:  # a flat line sits mid-plot
            y_low, y_high = y_low - 0.5, y_high + 0.5
        if x_high == x_low:
            x_low, x_high = x_low - 0.5, x_high + 0.5
        return cls(x_low, x_high, y_low, y_high, width - _MARGIN_LEFT - _MARGIN_RIGHT,
                   height - _MARGIN_TOP - _MARGIN_BOTTOM)  # fmt: skip

    def x(self, value: float) -> float:
        return _MARGIN_LEFT + (value - self.x_low) / (self.x_high - self.x_low) * self.plot_width

    def y(self, value: float) -> float:
        return _MARGIN_TOP + (1 - (value - self.y_low) / (self.y_high - self.y_low)) * self.plot_height

    def ticks(self, width: int, height: int) -> str:
        """Horizontal grid lines with y labels, and x labels under the axis."""
        parts = []
        for tick in nice_ticks(self.y_low, self.y_high):
            y = self.y(tick)
            parts.append(f"<line class='grid' x1='{_MARGIN_LEFT}' x2='{width - _MARGIN_RIGHT}' y1='{y:.1f}' "
                         f"y2='{y:.1f}'/><text x='{_MARGIN_LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>"
                         f"{_label(tick)}</text>")  # fmt: skip
        for tick in nice_ticks(self.x_low, self.x_high, 6):
            parts.append(f"<text x='{self.x(tick):.1f}' y='{height - _MARGIN_BOTTOM + 16}' text-anchor='middle'>"
                         f"{_label(tick)}</text>")  # fmt: skip
        return "".join(parts)


def bar_chart(bars: Sequence[tuple[str, float]], *, title: str, unit: str = "%", width: int = 480) -> Markup:
    """Horizontal bars, one per (label, value), values as shares of their total (weights → percent)."""
    total = sum(value for _, value in bars) or 1.0
    row = 24
    height = _MARGIN_TOP + row * len(bars) + 8
    parts = [_open(width, height, title)]
    label_w = 180
    for index, (label, value) in enumerate(bars):
        y = _MARGIN_TOP + index * row
        share = value / total
        bar_w = (width - label_w - 70) * share
        parts.append(f"<text x='{label_w - 8}' y='{y + 15}' text-anchor='end'>{html.escape(label)}</text>"
                     f"<rect x='{label_w}' y='{y + 3}' width='{bar_w:.1f}' height='16' "
                     f"fill='{PALETTE[index % len(PALETTE)]}'/><text x='{label_w + bar_w + 6:.1f}' "
                     f"y='{y + 15}'>{100 * share:.1f}{html.escape(unit)}</text>")  # fmt: skip
    parts.append("</svg>")
    return Markup("".join(parts))


def _open(width: int, height: int, title: str) -> str:
    escaped = html.escape(title)
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' class='chart' viewBox='0 0 {width} {height}' "
        f"width='{width}' height='{height}' role='img' aria-label='{escaped}'><title>{escaped}</title>"
        f"<text class='chart-title' x='{_MARGIN_LEFT}' y='16'>{escaped}</text>"
    )


def _axes(width: int, height: int, x_label: str, y_label: str) -> str:
    bottom = height - _MARGIN_BOTTOM
    return (
        f"<line class='axis' x1='{_MARGIN_LEFT}' x2='{width - _MARGIN_RIGHT}' y1='{bottom}' y2='{bottom}'/>"
        f"<line class='axis' x1='{_MARGIN_LEFT}' x2='{_MARGIN_LEFT}' y1='{_MARGIN_TOP}' y2='{bottom}'/>"
        f"<text x='{(width + _MARGIN_LEFT) / 2}' y='{height - 6}' text-anchor='middle'>{html.escape(x_label)}"
        f"</text><text transform='translate(14 {(height - _MARGIN_BOTTOM + _MARGIN_TOP) / 2}) rotate(-90)' "
        f"text-anchor='middle'>{html.escape(y_label)}</text>"
    )


def _legend(entries: list[tuple[str, str]], width: int, top: int) -> tuple[str, int]:
    """The legend in rows under the plot (wrapping as needed); returns it and the height it adds."""
    parts, x, y = [], float(_MARGIN_LEFT), top + 14
    for label, colour in entries:
        short = label if len(label) <= 40 else label[:39] + "…"
        entry_width = 34 + 7 * len(short)
        if x + entry_width > width and x > _MARGIN_LEFT:
            x, y = float(_MARGIN_LEFT), y + 16
        parts.append(f"<rect x='{x:.1f}' y='{y - 5}' width='14' height='3' fill='{colour}'/>"
                     f"<text x='{x + 18:.1f}' y='{y}' class='legend'>{html.escape(short)}</text>")  # fmt: skip
        x += entry_width
    return "".join(parts), (y - top + 8) if entries else 0
