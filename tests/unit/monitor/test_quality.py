"""The monitor's sampled judge score: the sample, its interval, the fall alert, and `monitor check
--judge-model` (a stand-in judge for the statistics, the tiny model as a local judge for the command)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.cli.common import UsageError
from tunesmith.config import default_database_url
from tunesmith.data.records import Message
from tunesmith.monitor.check import monitor_deployment
from tunesmith.monitor.quality import NO_REFERENCE, SampledJudge, compare_judge_scores, judge_sample
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry

runner = CliRunner()


class _ApologyHatingJudge:
    """Scores 1 for an answer that apologises, 5 otherwise; no score for an empty answer."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def choose(self, conversations: Sequence[list[Message]], options: Sequence[str]) -> list[int | None]:
        self.asked += [c[-1]["content"] for c in conversations]
        return [
            None if c[-1]["content"].endswith("Answer to rate:\n\n\nScore (1-5):")
            else 0 if "Answer to rate:\nI'm sorry" in c[-1]["content"] else 4
            for c in conversations
        ]  # fmt: skip


def test_a_seeded_sample_scored_against_the_rubric_with_a_bootstrap_interval() -> None:
    judge = _ApologyHatingJudge()
    sampled = SampledJudge(judge, {"helpful": "Helps.", "polite": "Polite."}, sample=40)
    answers = ["Sure, here it is."] * 60 + ["I'm sorry, I can't."] * 30 + [""] * 10
    report = judge_sample(sampled, [f"question {i}" for i in range(100)], answers)
    assert report["sampled"] == 40 and report["of"] == 100 and len(judge.asked) == 80  # 2 criteria
    assert all(NO_REFERENCE in asked for asked in judge.asked)  # production answers have no reference
    assert report["unparseable"] == 40 - len(report["scores"]) > 0  # the empty answers sampled
    assert set(report["scores"]) == {1.0, 5.0}
    assert report["ci_low"] < report["mean"] == np.mean(report["scores"]) < report["ci_high"]
    assert judge_sample(sampled, [f"question {i}" for i in range(100)], answers) == report  # seeded
    few = judge_sample(sampled, ["q"] * 3, answers[:3])
    assert few["sampled"] == 3 and few["mean"] == 5.0


def test_a_fall_of_the_judge_score_raises_an_alert_and_no_change_does_not() -> None:
    sampled = SampledJudge(_ApologyHatingJudge(), {"helpful": "Helps."}, sample=50)
    questions = [f"q{i}" for i in range(50)]
    good = judge_sample(sampled, questions, ["Sure."] * 45 + ["I'm sorry."] * 5)
    bad = judge_sample(sampled, questions, ["Sure."] * 25 + ["I'm sorry."] * 25)
    alerts = compare_judge_scores(bad, good)
    assert [alert["kind"] for alert in alerts] == ["judge_score"] and alerts[0]["data"]["p_value"] < 0.01
    assert alerts[0]["data"]["previous"]["mean"] > alerts[0]["data"]["current"]["mean"]
    assert compare_judge_scores(good, bad) == []  # a rise is not an alert
    assert compare_judge_scores(good, good) == []


def _log(store: ServingStore, i: int, answer: str, tenant: str | None = None) -> None:
    store.log_request(
        id=f"r{i}", tenant=tenant, endpoint="chat", requested_model="cafe", deployment="cafe", variant="base",
        user=None, prompt={"messages": [{"role": "user", "content": "is there wifi"}]}, outputs=[answer],
        finish_reasons=["stop"], prompt_tokens=3, completion_tokens=3, latency_ms=20.0,
    )  # fmt: skip


def test_monitor_check_judges_both_windows_and_stores_the_alert() -> None:
    from tunesmith.audit.privacy import RequestLogMode

    registry = Registry(default_database_url()).connect()
    store = ServingStore(registry)
    store.create_deployment("cafe", [{"model": "base", "weight": 1.0}], tenant=None)
    store.set_request_logging("quiet", RequestLogMode.OFF)
    for i in range(120):
        apologetic = i >= 60 and i % 2 == 0  # half the second window's answers apologise
        _log(
            store,
            i,
            "I'm sorry, I can't." if apologetic else "Yes, there is.",
            tenant="quiet" if i % 10 == 1 else None,
        )
    judge = SampledJudge(_ApologyHatingJudge(), {"helpful": "Helps."}, sample=40)
    report = monitor_deployment(registry, "cafe", window=60, judge=judge)
    assert report["judge"]["rubric"] == ["helpful"]
    assert (
        report["judge"]["current"]["of"] == 54 and report["judge"]["current"]["sampled"] == 40
    )  # 6 not logged
    assert report["judge"]["previous"]["mean"] == 5.0
    assert "judge_score" in {alert["kind"] for alert in report["alerts"]}
    assert MonitorStore(registry).alert_counts()[("cafe", "judge_score")] == 1
    assert "judge" not in monitor_deployment(registry, "cafe", window=60)  # no judge: no score


def test_monitor_check_with_a_local_judge_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    store = ServingStore(Registry(default_database_url()).connect())
    store.create_deployment("cafe", [{"model": "base", "weight": 1.0}], tenant=None)
    for i in range(20):
        _log(store, i, "Yes, there is.")
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text("brief: Is the answer short?\n", encoding="utf-8")
    args = ["monitor", "check", "cafe", "--window", "10", "--judge-model", str(tiny_model_dir)]
    result = runner.invoke(app, [*args, "--judge-sample", "4", "--rubric", str(rubric), "--json"])
    assert result.exit_code == 0, result.output
    judged = json.loads(result.output)["judge"]
    assert (
        judged["rubric"] == ["brief"] and judged["current"]["sampled"] == judged["previous"]["sampled"] == 4
    )
    assert (
        1 <= judged["current"]["mean"] <= 5 and judged["current"]["unparseable"] == 0
    )  # a local judge always answers
    shown = runner.invoke(app, [*args, "--judge-sample", "4"]).output
    assert "judge (helpfulness, correctness) current window" in shown
    rubric.write_text("- not a mapping\n", encoding="utf-8")
    for bad, flag in ((["--judge-sample", "1"], "--judge-sample"), (["--rubric", str(rubric)], "--rubric")):
        refused = runner.invoke(app, [*args, *bad])
        assert isinstance(refused.exception, UsageError) and flag in str(refused.exception)
    alone = runner.invoke(app, ["monitor", "check", "cafe", "--rubric", str(rubric)])
    assert isinstance(alone.exception, UsageError) and "--judge-model" in str(alone.exception)
