"""Bad project files fail before anything runs, each error naming the file and the key."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.unit.project.conftest import edit_project
from tunesmith.config import ConfigError
from tunesmith.project.spec import Stage, load_project
from tunesmith.project.templates import init_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "shop"
    init_project(directory, "local-marketing")
    return directory


def _fails(project: Path, change: Callable[[dict[str, Any]], None], message: str) -> None:
    edit_project(project, change)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        load_project(project)
    assert str(caught.value).startswith(str(project / "tunesmith.yaml"))


def test_the_template_loads_as_shipped(project: Path) -> None:
    loaded = load_project(project)
    assert loaded.spec.name == "shop" and loaded.task == "generation"
    assert loaded.spec.stages == list(Stage)
    assert loaded.train_spec().data == project / ".tunesmith" / "prepared"


def test_an_unknown_stage_names_the_key(project: Path) -> None:
    _fails(
        project, lambda s: s.update(stages=["prepare", "evaluate"]), "stages[1]: Input should be 'prepare'"
    )


def test_a_stage_needs_the_stages_it_reads(project: Path) -> None:
    _fails(project, lambda s: s.update(stages=["prepare", "train", "eval"]), "stages: eval reads baseline")
    _fails(project, lambda s: s.update(stages=["train", "prepare"]), "stages: list each stage once")


def test_a_missing_data_file_names_the_key(project: Path) -> None:
    _fails(project, lambda s: s["data"].update(files=["data/examples.jsonl", "data/more.jsonl"]),
           "data.files[1]: data/more.jsonl not found")  # fmt: skip


def test_a_metric_the_task_lacks_names_the_key(project: Path) -> None:
    _fails(project, lambda s: s["eval"].update(metrics=["rouge_l", "accuracy"]),
           "eval.metrics: ['accuracy'] do not apply to a generation task")  # fmt: skip


def test_a_gate_metric_must_be_scored(project: Path) -> None:
    _fails(project, lambda s: s["gate"].update(metrics=["bleu"]), "gate.metrics: ['bleu'] are not scored")


def test_a_training_metric_the_task_lacks_names_the_train_key(project: Path) -> None:
    _fails(project, lambda s: s["train"].update(eval_metrics=["macro_f1"], select_by="macro_f1"),
           "train.eval_metrics: ['macro_f1'] do not apply")  # fmt: skip


def test_unknown_keys_suggest_the_close_one(project: Path) -> None:
    _fails(project, lambda s: s.update(trian=s.pop("train")), "trian: unknown key; did you mean train?")
    edit_project(project, lambda s: s.update(train=s.pop("trian")))
    _fails(project, lambda s: s["train"].update(lrr=0.1), "train.lrr: unknown key; did you mean lr?")
    edit_project(project, lambda s: s["train"].pop("lrr"))
    _fails(project, lambda s: s["eval"].update(shot=2), "eval.shot: unknown key; did you mean shots?")


def test_bad_values_name_their_keys(project: Path) -> None:
    _fails(project, lambda s: s["train"].update(lr=-1), "train.lr: Input should be greater than 0")
    edit_project(project, lambda s: s["train"].update(lr=0.001))
    _fails(project, lambda s: s["prepare"].update(pii="hide"), "prepare.pii: Input should be")
    edit_project(project, lambda s: s["prepare"].update(pii="report"))
    _fails(project, lambda s: s["train"]["lora"].update(r=0), "train.lora.r: Input should be greater than 0")


def test_keys_the_project_sets_are_refused(project: Path) -> None:
    _fails(project, lambda s: s["train"].update(data="elsewhere.jsonl"), "train.data: set by the project")
    edit_project(project, lambda s: s["train"].pop("data"))
    _fails(project, lambda s: s["prepare"].update(out="x"), "prepare.out: set by the project")
    edit_project(project, lambda s: s["prepare"].pop("out"))
    _fails(project, lambda s: s["train"].update(method="dpo"), "train.method: a project trains sft")
    edit_project(project, lambda s: s["train"].pop("method"))
    _fails(project, lambda s: s["eval"].update(data="test.jsonl"), "eval.data: set by the project")
    edit_project(project, lambda s: s["eval"].pop("data"))
    _fails(
        project,
        lambda s: s["eval"].update(baselines=False),
        "eval.baselines: set by the project (the baseline",
    )


def test_the_eval_section_takes_the_eval_commands_keys(project: Path) -> None:
    edit_project(project, lambda s: s["eval"].update(num_beams=2, no_repeat_ngram_size=3))
    evaluation = load_project(project).eval_spec()
    assert (evaluation.num_beams, evaluation.no_repeat_ngram_size) == (2, 3)
    assert evaluation.data == evaluation.train_data == project / ".tunesmith" / "prepared"
    _fails(
        project, lambda s: s["eval"].update(num_beam=4), "eval.num_beam: unknown key; did you mean num_beams?"
    )
    edit_project(project, lambda s: s["eval"].pop("num_beam"))
    _fails(project, lambda s: s["eval"].update(do_sample=True), "eval: do_sample and num_beams > 1")
    edit_project(project, lambda s: s["eval"].update(do_sample=False, calibration_data="val.jsonl"))
    _fails(
        project,
        lambda s: s["eval"].update(out_of_scope_label="oos"),
        "eval.calibration_data: val.jsonl not found",
    )
    edit_project(project, lambda s: s["eval"].pop("calibration_data"))
    _fails(project, lambda s: None, "eval.out_of_scope_label: applies to classification, not to a generation")
    edit_project(project, lambda s: s["eval"].pop("out_of_scope_label"))
    _fails(project, lambda s: s["eval"].update(review_example=2), "eval.review_example: unknown key; did you "
           "mean review_examples?")  # fmt: skip
    edit_project(project, lambda s: s["eval"].pop("review_example"))
    _fails(
        project,
        lambda s: s["eval"].update(review_examples=0),
        "eval.review_examples: Input should be greater",
    )


def test_a_gated_pipeline_needs_a_gate(project: Path) -> None:
    _fails(project, lambda s: s.pop("gate"), "gate: required while stages lists gate")
    edit_project(project, lambda s: s.update(stages=["prepare", "baseline", "train", "eval"]))
    assert load_project(project).spec.gate is None


def test_a_folder_without_a_project_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no tunesmith.yaml here; create a project with `tunesmith init"):
        load_project(tmp_path)
