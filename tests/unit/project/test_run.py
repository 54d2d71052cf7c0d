"""`run_project` and `project_status`: what reruns after which change, and what a failure leaves behind."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.project.conftest import ProjectMaker, edit_project
from tunesmith.audit.trail import read_log
from tunesmith.config import ConfigError, default_database_url
from tunesmith.project.gate import GateFailed
from tunesmith.project.pipeline import StageFailed, project_status, run_project
from tunesmith.project.spec import Stage
from tunesmith.registry.serving_store import Caller, ServingStore
from tunesmith.registry.store import Registry

EVERY_STAGE = ["prepare", "baseline", "train", "eval", "gate", "register", "deploy"]


def _run(directory: Path, **options: Any) -> list[str]:
    return [str(stage) for stage in run_project(directory, show_progress=False, **options).ran]


def _status(directory: Path) -> dict[str, tuple[str, list[str]]]:
    return {str(s.stage): (str(s.state), s.reasons) for s in project_status(directory)}


@pytest.fixture
def ran(make_project: ProjectMaker) -> Path:
    """A local-marketing project (tiny model) that has run once."""
    directory = make_project()
    assert _run(directory) == EVERY_STAGE
    return directory


def test_a_second_run_runs_nothing_and_everything_is_up_to_date(ran: Path) -> None:
    outcome = run_project(ran, show_progress=False)
    assert outcome.ran == [] and [str(stage) for stage in outcome.up_to_date] == EVERY_STAGE
    assert {state for state, _ in _status(ran).values()} == {"up to date"}


def test_the_run_is_recorded_in_the_registry_with_lineage(ran: Path) -> None:
    cache = json.loads((ran / ".tunesmith" / "stages.json").read_text())["stages"]
    registry = Registry(default_database_url()).connect()
    run = registry.get_run(cache["train"]["identity"])
    assert run is not None and run["dataset_id"] == cache["prepare"]["identity"]  # dataset -> run
    evaluation, verdict = run["evaluations"]  # run -> evaluation -> the gate's verdict on it
    assert evaluation["kind"] == "evaluation" and evaluation["models"][-1]["name"] == "fine-tuned"
    assert verdict["kind"] == "gate" and verdict["passed"] and verdict["evaluation_id"] == evaluation["id"]
    assert verdict["adapter_dir"] == cache["train"]["outputs"]["adapter"]
    assert [(c["metric"], c["baseline"]) for c in verdict["checks"]] == [
        ("rouge_l", "base zero-shot"),
        ("rouge_l", "base 3-shot"),
    ]
    assert all(
        c["ci_low"] <= c["difference"] <= c["ci_high"] and 0 <= c["p_value"] <= 1 for c in verdict["checks"]
    )
    audits = [record for record in read_log(registry) if record["action"] == "gate.verdict"]
    assert [(a["target"], a["after"]["passed"]) for a in audits] == [(run["id"], True)]
    store = ServingStore(registry)
    adapter = store.find_adapter(Caller(tenant=None, is_admin=True), "shop", None)
    assert adapter.key == "shop@1" and adapter.path == cache["train"]["outputs"]["adapter"]  # run -> adapter
    deployment = store.find_deployment(Caller(tenant=None, is_admin=True), "shop")
    assert deployment is not None and deployment["variants"] == [{"model": "shop@1", "weight": 100.0}]
    assert (ran / cache["eval"]["outputs"]["path"] / "review.md").read_text().count("## Example") == 2


def test_a_new_learning_rate_reruns_train_and_what_follows_only(ran: Path) -> None:
    edit_project(ran, lambda spec: spec["train"].update(lr=0.002))
    status = _status(ran)
    assert status["prepare"][0] == status["baseline"][0] == "up to date"
    assert status["train"] == ("stale", ["train.lr: 0.001 -> 0.002"])
    assert status["eval"] == ("stale", ["train is stale"])
    assert _run(ran) == ["train", "eval", "gate", "register", "deploy"]
    registry = Registry(default_database_url()).connect()
    deployment = ServingStore(registry).find_deployment(Caller(tenant=None, is_admin=True), "shop")
    assert deployment is not None and deployment["variants"][0]["model"] == "shop@2"


def test_eval_only_settings_rerun_eval_only(ran: Path) -> None:
    edit_project(ran, lambda spec: spec["eval"]["review_rubric"].update(spelling="British spelling"))
    assert _status(ran)["eval"][1] == ["eval.review_rubric.spelling: new key (British spelling)"]
    assert _run(ran) == ["eval"]  # the same figures: the gate need not look again


def test_how_answers_are_generated_reruns_both_scorings_but_not_training(ran: Path) -> None:
    edit_project(ran, lambda spec: spec["eval"].update(max_new_tokens=6))
    ran_now = _run(ran)
    assert ran_now[:2] == ["baseline", "eval"] and "train" not in ran_now and "register" not in ran_now


def test_decoding_settings_rerun_both_scorings_and_the_report_names_them(ran: Path) -> None:
    edit_project(ran, lambda spec: spec["eval"].update(num_beams=2))
    status = _status(ran)
    assert status["baseline"] == (
        "stale",
        ["eval.decoding: greedy -> beam search (2 beams, length penalty 1)"],
    )
    ran_now = _run(ran)
    assert ran_now[:2] == ["baseline", "eval"] and "train" not in ran_now
    cache = json.loads((ran / ".tunesmith" / "stages.json").read_text())["stages"]
    report = json.loads((ran / cache["eval"]["outputs"]["path"] / "report.json").read_text())
    assert report["settings"]["decoding"] == "beam search (2 beams, length penalty 1)"


def test_a_changed_data_file_reruns_prepare(ran: Path) -> None:
    data = ran / "data" / "examples.jsonl"
    data.write_text("".join(data.read_text().splitlines(keepends=True)[:-1]))
    assert _status(ran)["prepare"] == ("stale", ["data/examples.jsonl changed"])
    assert _run(ran, target=Stage.prepare) == ["prepare"]
    assert _status(ran)["train"] == ("stale", ["prepare's output changed"])


def test_force_reruns_an_up_to_date_stage(ran: Path) -> None:
    # Greedy answers come out the same, so eval, reading them, stays up to date.
    assert _run(ran, force=[Stage.baseline]) == ["baseline"]
    with pytest.raises(ConfigError, match="--force deploy: not among the stages this run runs"):
        _run(ran, target=Stage.train, force=[Stage.deploy])


def test_a_target_runs_it_and_what_it_reads(make_project: ProjectMaker) -> None:
    directory = make_project()
    assert _run(directory, target=Stage.train) == ["prepare", "train"]
    status = _status(directory)
    assert status["baseline"] == ("stale", ["never run"]) and status["eval"][1][:1] == ["never run"]


def test_missing_outputs_make_a_stage_stale(ran: Path) -> None:
    cache = json.loads((ran / ".tunesmith" / "stages.json").read_text())["stages"]
    adapter = Path(cache["train"]["outputs"]["adapter"])
    (adapter / "adapter_config.json").unlink()
    assert _status(ran)["train"] == ("stale", [f"the adapter {adapter} is gone"])


def test_a_failed_stage_stops_the_run_and_keeps_earlier_results(
    ran: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = json.loads((ran / ".tunesmith" / "stages.json").read_text())["stages"]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr("tunesmith.train.sft.train_sft", broken)
    edit_project(ran, lambda spec: spec["train"].update(lr=0.002))
    events: list[Any] = []
    with pytest.raises(StageFailed, match="train failed: out of memory"):
        run_project(ran, show_progress=False, on_event=events.append)
    assert [(str(e.stage), str(e.state)) for e in events][-1] == ("train", "failed")
    after = json.loads((ran / ".tunesmith" / "stages.json").read_text())["stages"]
    assert after == before  # the last successes stand, eval's report and the deployment included
    status = _status(ran)
    assert status["prepare"][0] == "up to date"
    assert status["train"][0] == "failed" and "RuntimeError: out of memory" in status["train"][1][-1]


def test_a_failed_gate_stops_before_register(make_project: ProjectMaker) -> None:
    directory = make_project()
    edit_project(directory, lambda spec: spec["gate"].update(min_difference=1000.0))
    with pytest.raises(StageFailed, match="gate failed: the adapter did not clear the gate") as caught:
        run_project(directory, show_progress=False)
    assert isinstance(caught.value.__cause__, GateFailed)
    assert "rouge_l vs base zero-shot" in str(caught.value)
    status = _status(directory)
    assert status["gate"][0] == "failed" and status["register"][0] == "stale"
    registry = Registry(default_database_url()).connect()
    run_id = json.loads((directory / ".tunesmith" / "stages.json").read_text())["stages"]["train"]["identity"]
    run = registry.get_run(run_id)
    assert run is not None
    (verdict,) = [e for e in run["evaluations"] if e["kind"] == "gate"]  # recorded before the stop
    assert not verdict["passed"] and not any(check["passed"] for check in verdict["checks"])
    audits = [record for record in read_log(registry) if record["action"] == "gate.verdict"]
    assert [(a["target"], a["after"]["passed"]) for a in audits] == [(run_id, False)]
    assert "rouge_l vs base zero-shot" in audits[0]["after"]["failed"][0]
    adapters = ServingStore(Registry(default_database_url()).connect()).visible_adapters(Caller(None, True))
    assert "shop" not in {adapter.name for adapter in adapters}  # only the run's own, named by its id


def test_one_run_at_a_time(ran: Path) -> None:
    with (ran / ".tunesmith" / "lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another `tunesmith run` is working here"):
            run_project(ran, show_progress=False)


def test_out_of_scope_settings_reach_the_evaluation(make_project: ProjectMaker) -> None:
    directory = make_project("intent-routing", "router")
    metrics = ["accuracy", "macro_f1", "out_of_scope_recall"]  # a gate could require the recall too
    edit_project(directory, lambda spec: spec["eval"].update(out_of_scope_label="complaint", metrics=metrics))
    assert _run(directory, target=Stage.eval)[-1] == "eval"
    cache = json.loads((directory / ".tunesmith" / "stages.json").read_text())["stages"]
    assert cache["baseline"]["inputs"]["eval.out_of_scope_label"] == "complaint"
    report = json.loads((directory / cache["eval"]["outputs"]["path"] / "report.json").read_text())
    assert "out_of_scope_recall" in report["models"][0]["metrics"]
