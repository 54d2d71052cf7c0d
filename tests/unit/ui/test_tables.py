"""What the deployment and evaluation pages compute: traffic per variant over time, examples best and worst first."""

from __future__ import annotations

from pathlib import Path

from tests.ui_registry import fill
from tunesmith.registry.serving_records import Caller
from tunesmith.ui.examples import load_examples
from tunesmith.ui.queries import find_evaluation
from tunesmith.ui.traffic import BUCKETS, traffic_series, variant_totals


def request(variant: str, at: str, ratings: list[int | None], thumbs: str | None = None) -> dict[str, object]:
    return {"variant": variant, "created_at": at,
            "feedback": [{"rating": r, "thumbs": thumbs} for r in ratings]}  # fmt: skip


def test_traffic_is_counted_per_variant_and_bucket() -> None:
    traffic = [
        request("a@1", "2026-12-01T00:00:00+00:00", [5]),
        request("a@2", "2026-12-01T01:00:00+00:00", [1, 3], thumbs="down"),
        request("a@1", "2026-12-01T01:30:00+00:00", []),
    ]
    requests, ratings, x_label = traffic_series(traffic)
    assert x_label == "minutes since the first request"  # a 90-minute span
    by_name = {series.label: series for series in requests}
    assert sum(y for _, y in by_name["a@1"].points) == 2 and sum(y for _, y in by_name["a@2"].points) == 1
    assert len(by_name["a@1"].points) == BUCKETS
    assert [y for _, y in {s.label: s for s in ratings}["a@2"].points] == [2.0]
    totals = {row["variant"]: row for row in variant_totals(traffic)}
    assert totals["a@1"]["requests"] == 2 and totals["a@1"]["mean_rating"] == 5
    assert totals["a@2"]["thumbs_up"] == 0.0 and totals["a@1"]["thumbs_up"] is None
    assert traffic_series([]) == ([], [], "time since the first request")


def test_examples_come_worst_or_best_first_by_the_last_model_against_the_first(tmp_path: Path) -> None:
    filled = fill(tmp_path)
    evaluation = find_evaluation(filled.registry, Caller(None, True), filled.evaluation_id)
    assert evaluation is not None
    table = load_examples(evaluation["out_dir"], evaluation["report"], "exact_match")
    assert table is not None and table.models == ["base", "acme-adapter"]
    worst, best = table.ordered("worst"), table.ordered("best")
    # the fixture: base right on even examples, the adapter on those not divisible by 3
    assert [e.index for e in worst[:5]] == [0, 6, 12, 18, 24] and all(e.gain == -1 for e in worst[:5])
    assert all(e.gain == 1 for e in best[:5]) and [e.index for e in best[:3]] == [1, 5, 7]
    assert [e.index for e in table.ordered("index")] == list(range(30))
    assert load_examples(str(tmp_path / "gone"), evaluation["report"], "exact_match") is None
