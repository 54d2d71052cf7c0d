"""A review task exported as the datasets `data from-feedback` writes, with the task in their lineage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import ConfigError, PrepareSpec
from tunesmith.data.prepare import prepare_data
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.review.export import export_review
from tunesmith.review.records import Choice, ReviewKind
from tunesmith.review.sources import collect_items, items_from_evaluation
from tunesmith.review.store import ForbiddenError, ReviewStore

from .conftest import DEMO_TEST, People, write_evaluation


def _inspect(folder: Path) -> dict[str, object]:
    result = CliRunner().invoke(app, ["data", "inspect", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    summary: dict[str, object] = json.loads(result.stdout)
    return summary


def _rows(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for split in ("train", "val", "test") if (folder / f"{split}.jsonl").is_file()
            for line in (folder / f"{split}.jsonl").read_text().splitlines()]  # fmt: skip


def test_pairwise_judgements_export_as_dpo_pairs_the_data_tools_accept(
    tmp_path: Path, store: ReviewStore, people: People, registry: Registry, tiny_model_dir: Path
) -> None:
    items, source = items_from_evaluation(
        write_evaluation(tmp_path / "eval", ["base", "acme@1"]), ReviewKind.pairwise
    )
    task = store.create(people.admin, "p", ReviewKind.pairwise, items, source=source, tenant="acme")
    for reviewer in (
        people.alice,
        people.bob,
    ):  # both prefer acme@1, except bob on one item: no majority there
        while (view := store.next_item(task.id, reviewer)) is not None:
            acme_left = view.outputs[0].startswith("acme@1")
            choice = Choice.a if acme_left else Choice.b
            if reviewer is people.bob and view.item_id == store.items(task.id, people.admin)[0]["id"]:
                choice = Choice.b if acme_left else Choice.a
            store.record(task.id, view.item_id, reviewer, choice=choice)
    with pytest.raises(ForbiddenError):
        export_review(store, task.id, people.alice, tmp_path / "out", model=str(tiny_model_dir))
    results, unused = export_review(store, task.id, people.admin, tmp_path / "out", model=str(tiny_model_dir))
    assert set(results) == {"dpo"} and len(unused) == 1 and "no model preferred by most" in unused[0]
    rows = _rows(tmp_path / "out" / "dpo")
    assert len(rows) == 5 and all(str(row["chosen"]).startswith("acme@1") for row in rows)
    assert {row["source_ids"]["review_task"] for row in rows} == {task.id}  # type: ignore[index]
    assert _inspect(tmp_path / "out" / "dpo")["kind"] == "preference"
    lineage = registry.get_dataset(results["dpo"].hash)
    assert lineage is not None and lineage["lineage"]["review_task"]["id"] == task.id


def test_a_data_review_exports_the_next_dataset_version(
    tmp_path: Path, store: ReviewStore, people: People, registry: Registry, tiny_model_dir: Path
) -> None:
    spec = PrepareSpec(inputs=[DEMO_TEST], out=tmp_path / "v1", model=str(tiny_model_dir), calibrate=False)
    prepared = prepare_data(spec, registry=registry)
    total = sum(prepared.splits.values())
    items, source = collect_items(
        ServingStore(registry), people.admin, ReviewKind.data, dataset=Path(prepared.hash), sample=4, seed=1
    )  # the version's id in the registry names its folder
    task = store.create(
        people.admin, "d", ReviewKind.data, items, source=source, tenant="acme", reviewers_per_item=1
    )
    decisions = iter([(Choice.reject, None), (Choice.approve, "Hi! Fixed reply."), (Choice.approve, None)])
    while (view := store.next_item(task.id, people.alice)) is not None:
        choice, edit = next(decisions, (Choice.approve, None))
        store.record(task.id, view.item_id, people.alice, choice=choice, edited_text=edit)
    first = store.items(task.id, people.admin)[0]["id"]
    with pytest.raises(ConfigError, match="no edit"):
        store.record(task.id, first, people.bob, choice=Choice.reject, edited_text="x")
    assert store.results(task.id, people.admin, samples=50).decisions == {
        "rejected": 1,
        "edited": 1,
        "approved": 2,
    }
    results, unused = export_review(store, task.id, people.admin, tmp_path / "v2", model=str(tiny_model_dir))
    rows = _rows(tmp_path / "v2" / "sft")
    assert len(rows) == total - 1 and len(unused) == 1
    assert sum(row["source_ids"]["edited"] for row in rows) == 1  # type: ignore[index]
    assert any(row["messages"][-1]["content"] == "Hi! Fixed reply." for row in rows)  # type: ignore[index]
    assert _inspect(tmp_path / "v2" / "sft")["kind"] == "chat"


def test_rubric_judgements_give_kto_rows_by_mean_score_and_edits_give_sft_rows_and_pairs(
    store: ReviewStore, people: People
) -> None:
    from tunesmith.review.export import review_rows
    from tunesmith.review.records import NewItem
    from tunesmith.review.rubric import RubricSpec

    items = [NewItem([{"role": "user", "content": f"q{i}"}], None, [{"model": "m", "text": f"answer {i}"}], {})
             for i in range(3)]  # fmt: skip
    rubric = RubricSpec(criteria={"voice": "?", "accuracy": "?"})
    task = store.create(people.admin, "r", ReviewKind.rubric, items, source={}, rubric=rubric, tenant="acme")
    ids = [item["id"] for item in store.items(task.id, people.admin)]
    scores = {ids[0]: (5, 4), ids[1]: (1, 2), ids[2]: (3, 3)}  # good, bad, neither
    for reviewer in (people.alice, people.bob):
        for item_id, (voice, accuracy) in scores.items():
            edit = "answer 1, fixed" if reviewer is people.alice and item_id == ids[1] else None
            store.record(
                task.id, item_id, reviewer, scores={"voice": voice, "accuracy": accuracy}, edited_text=edit
            )
    rows = review_rows(task, store.items(task.id, people.admin), store.judgements(task.id, people.admin),
                       good_rating=4, bad_rating=2)  # fmt: skip
    assert [(row["completion"], row["label"]) for row in rows.kto] == [
        ("answer 0", True),
        ("answer 1", False),
    ]
    assert rows.sft == [{"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "answer 1, fixed"}],
                         "request_id": f"review:{task.id}:{ids[1]}", "source_ids": rows.kto[1]["source_ids"]}]  # fmt: skip
    assert [(row["chosen"], row["rejected"]) for row in rows.dpo] == [("answer 1, fixed", "answer 1")]
    assert rows.unused == [f"item {ids[2]}: mean score 3.00 is neither good nor bad"]
