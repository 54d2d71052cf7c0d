"""The console's inline SVG charts: well-formed, escaped, thinned, and honest about missing data."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from tunesmith.ui.charts import MAX_POINTS, Series, bar_chart, line_chart, nice_ticks, thin

SVG = "{http://www.w3.org/2000/svg}"


def test_a_line_chart_is_svg_with_one_polyline_per_series_and_escaped_labels() -> None:
    chart = line_chart(
        [Series("<script>alert(1)</script>", [(1, 2.0), (2, 1.5), (3, 1.2)]), Series("val & co", [(3, 1.4)])],
        title="loss <b>", x_label="step", y_label="loss",
    )  # fmt: skip
    root = ElementTree.fromstring(str(chart))  # parses: the markup is well-formed
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f"{SVG}polyline")) == 2
    assert "<script>" not in chart and "&lt;script&gt;" in chart
    assert "loss &lt;b&gt;" in chart
    assert len(root.findall(f"{SVG}circle")) == 1  # the single validation point still shows
    points = root.findall(f"{SVG}polyline")[0].attrib["points"].split()
    xs = [float(point.split(",")[0]) for point in points]
    ys = [float(point.split(",")[1]) for point in points]
    assert xs == sorted(xs) and ys == sorted(ys)  # falling loss: y grows downward in SVG


def test_no_data_says_so() -> None:
    chart = line_chart([Series("train", [])], title="loss", x_label="step", y_label="loss")
    assert "no data" in chart
    ElementTree.fromstring(str(chart))


def test_long_series_are_thinned_keeping_the_last_point() -> None:
    points = [(float(step), 1.0 / step) for step in range(1, 5001)]
    kept = thin(points)
    assert len(kept) <= MAX_POINTS + 1 and kept[0] == points[0] and kept[-1] == points[-1]
    chart = line_chart([Series("train", points)], title="t", x_label="x", y_label="y")
    assert len(chart) < 20_000


def test_nice_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(1.0, 1.0) == [1.0]
    ticks = nice_ticks(0.00013, 0.00087)
    assert ticks[0] >= 0.00013 and ticks[-1] <= 0.00087 and len(ticks) >= 3


def test_bar_chart_shows_shares() -> None:
    chart = bar_chart([("acme@1", 90), ("<i>acme@2</i>", 10)], title="weights")
    assert "90.0%" in chart and "10.0%" in chart and "&lt;i&gt;" in chart
    ElementTree.fromstring(str(chart))
