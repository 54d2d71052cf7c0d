"""Every template: its files, its sample data (reproducible from the script), `init`, and a short `run`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO
from tests.unit.project.conftest import ProjectMaker
from tunesmith.cli import app
from tunesmith.cli.common import UsageError
from tunesmith.config import ConfigError
from tunesmith.project.pipeline import run_project
from tunesmith.project.templates import TEMPLATES_DIR, init_project, list_templates

NAMES = [template.name for template in list_templates()]
runner = CliRunner()


def test_the_catalog_lists_every_template_folder() -> None:
    assert NAMES == ["brand-voice", "support-replies", "intent-routing", "summarisation", "moderation",
                     "recommendations", "local-marketing"]  # fmt: skip
    assert sorted(NAMES) == sorted(p.name for p in TEMPLATES_DIR.iterdir() if p.is_dir())
    for name in NAMES:
        assert {p.name for p in (TEMPLATES_DIR / name).iterdir()} == {"tunesmith.yaml", "README.md", "data"}


def test_init_list_describes_each_template_in_a_line() -> None:
    result = runner.invoke(app, ["init", "--list"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    assert all(len(line.split()) > 6 for line in lines)


@pytest.mark.parametrize("name", NAMES)
def test_the_sample_data_is_what_the_script_writes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    sys.modules.pop("make_template_data", None)
    import make_template_data

    rows = make_template_data.sample_rows(name)
    shipped = (TEMPLATES_DIR / name / "data" / "examples.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in shipped] == rows
    assert len(rows) >= 120 and len({json.dumps(row) for row in rows}) == len(rows)


@pytest.mark.parametrize("name", NAMES)
def test_init_and_a_short_run_deploy_each_template(name: str, make_project: ProjectMaker) -> None:
    directory = make_project(name)
    assert (directory / "README.md").is_file() and (directory / ".gitignore").read_text() == ".tunesmith/\n"
    outcome = run_project(directory, show_progress=False)
    assert [str(stage) for stage in outcome.ran] == ["prepare", "baseline", "train", "eval", "gate", "register",
                                                     "deploy"]  # fmt: skip
    assert outcome.eval_dir is not None
    report = json.loads((outcome.eval_dir / "report.json").read_text())
    task = next(t.task for t in list_templates() if t.name == name)
    assert report["task"] == task and report["data"]["examples"] == 4
    assert [model["shots"] for model in report["models"]] == [0, report["models"][1]["shots"], None]
    assert (outcome.eval_dir / "review.md").is_file()


def test_init_refuses_what_it_cannot_make(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--template shopping: no such template; choose one of brand-voice"):
        init_project(tmp_path / "a", "shopping")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        init_project(tmp_path / "full", "moderation")
    with pytest.raises(ConfigError, match="'my shop' cannot name an adapter"):
        init_project(tmp_path / "my shop", "moderation")
    result = runner.invoke(app, ["init", str(tmp_path / "b")])
    assert isinstance(result.exception, UsageError) and "--template NAME" in str(result.exception)
