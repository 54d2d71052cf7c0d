"""`tunesmith keys create --role` and `tunesmith review create|list|show|results|close` on the local registry."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import ConfigError, default_database_url
from tunesmith.registry.serving_records import Role
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.review.records import Choice
from tunesmith.review.store import ReviewStore

from .conftest import write_evaluation

runner = CliRunner()


def _json(args: list[str]) -> object:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_reviewer_keys_and_a_pairwise_task_from_create_to_results(tmp_path: Path) -> None:
    made = _json(["keys", "create", "--name", "alice", "--role", "reviewer", "--tenant", "acme", "--json"])
    assert isinstance(made, dict) and (made["role"], made["name"], made["admin"]) == (
        "reviewer",
        "alice",
        False,
    )
    bob_key = str(_json(["keys", "create", "-n", "bob", "--role", "reviewer", "-t", "acme", "--json"])["key"])  # type: ignore[index]
    assert _json(["keys", "create", "--admin", "--json"])["role"] == "admin"  # type: ignore[index]
    assert [k["role"] for k in _json(["keys", "list", "--json"])] == ["reviewer", "reviewer", "admin"]  # type: ignore[union-attr,index]
    evaluation = write_evaluation(tmp_path / "eval", ["base", "acme@1"])
    task = _json(["review", "create", "v1 vs base", "--kind", "pairwise", "--evaluation", str(evaluation),
                  "--tenant", "acme", "--json"])  # fmt: skip
    assert isinstance(task, dict) and task["items"] == 6 and task["models"] == ["acme@1", "base"]
    registry = Registry(default_database_url()).connect()
    keys, store = ServingStore(registry), ReviewStore(registry)
    alice = keys.authenticate(str(made["key"]))
    bob = keys.authenticate(bob_key)
    assert alice is not None and bob is not None and alice.role is Role.reviewer and alice.name == "alice"
    for reviewer in (alice, bob):
        while (view := store.next_item(task["id"], reviewer)) is not None:
            store.record(
                task["id"],
                view.item_id,
                reviewer,
                choice=Choice.a if view.outputs[0].startswith("acme") else Choice.b,
            )
    results = _json(["review", "results", str(task["id"]), "--samples", "50", "--json"])
    assert isinstance(results, dict) and results["win_rates"]["acme@1"]["value"] == 1.0
    assert results["agreement"][0]["items"] == 6
    shown = runner.invoke(app, ["review", "results", str(task["id"]), "--samples", "50"])
    assert shown.exit_code == 0 and "Bradley-Terry" in shown.stdout and "Krippendorff" in shown.stdout
    progress = _json(["review", "show", str(task["id"]), "--json"])["progress"]  # type: ignore[index]
    assert sorted(r["name"] for r in progress["reviewers"]) == ["alice", "bob"] and progress["judged"] == 12
    assert [t["id"] for t in _json(["review", "list", "--json"])] == [task["id"]]  # type: ignore[union-attr,index]
    assert _json(["review", "close", str(task["id"]), "--json"])["status"] == "closed"  # type: ignore[index]


def test_a_rubric_task_needs_a_rubric_and_reads_one_from_yaml(tmp_path: Path) -> None:
    evaluation = write_evaluation(tmp_path / "eval", ["base", "acme@1"])
    missing = runner.invoke(app, ["review", "create", "r", "--kind", "rubric", "--evaluation", str(evaluation),
                                  "--project", str(tmp_path)])  # fmt: skip
    assert isinstance(missing.exception, ConfigError) and "needs --rubric FILE" in str(missing.exception)
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text("criteria:\n  voice: Does it sound like us?\nlevels:\n  9: off the scale\n")
    bad = runner.invoke(app, ["review", "create", "r", "--kind", "rubric", "--evaluation", str(evaluation),
                              "--rubric", str(rubric)])  # fmt: skip
    assert isinstance(bad.exception, ConfigError) and "levels" in str(bad.exception)
    assert "off the 1-5 scale" in str(bad.exception)
    rubric.write_text("criteria:\n  voice: Does it sound like us?\n")
    task = _json(["review", "create", "r", "--kind", "rubric", "--evaluation", str(evaluation), "--models", "acme@1",
                  "--rubric", str(rubric), "--json"])  # fmt: skip
    assert (
        isinstance(task, dict)
        and task["items"] == 6
        and task["rubric"]["criteria"] == {"voice": "Does it sound like us?"}
    )


def test_a_rubric_task_takes_the_project_rubric(tmp_path: Path) -> None:
    from tunesmith.project.templates import init_project

    project = init_project(tmp_path / "support", "support-replies").parent
    evaluation = write_evaluation(tmp_path / "eval", ["base", "acme@1"], examples=2)
    task = _json(["review", "create", "r", "--kind", "rubric", "--evaluation", str(evaluation), "--project",
                  str(project), "--json"])  # fmt: skip
    assert isinstance(task, dict) and sorted(task["rubric"]["criteria"]) == ["correct", "resolves", "tone"]
