"""The review queue: blind order stable per reviewer, no double judging, tenants and roles, audit."""

from __future__ import annotations

import pytest

from tunesmith.audit.trail import read_log, verify_registry
from tunesmith.config import ConfigError
from tunesmith.registry.serving_records import Caller, Role
from tunesmith.registry.store import Registry
from tunesmith.review.records import Choice, NewItem, ReviewKind
from tunesmith.review.rubric import RubricSpec
from tunesmith.review.store import ForbiddenError, NotFoundError, ReviewStore

from .conftest import People, make_people, pairwise_items

RUBRIC = RubricSpec(criteria={"voice": "Does it sound like the brand?", "accuracy": "Is it correct?"})


def test_blind_order_is_stable_for_a_reviewer_and_differs_between_reviewers(
    store: ReviewStore, people: People
) -> None:
    task = store.create(
        people.admin, "taglines", ReviewKind.pairwise, pairwise_items(16), source={}, tenant="acme"
    )
    shown: dict[str, dict[int, list[str]]] = {"alice": {}, "bob": {}}
    for name, reviewer in (("alice", people.alice), ("bob", people.bob)):
        while (view := store.next_item(task.id, reviewer)) is not None:
            assert store.next_item(task.id, reviewer) == view  # asked again: the same item, the same order
            assert "acme@2" not in str(view.to_dict()).replace("acme@2 answer", "")  # identities hidden
            judgement = store.record(task.id, view.item_id, reviewer, choice=Choice.a)
            # the stored order is the order shown, and A resolves to the model shown on the left
            assert [text.split(" answer")[0] for text in view.outputs] == judgement.shown
            assert judgement.preferred == judgement.shown[0]
            shown[name][view.item_id] = judgement.shown
    assert len(shown["alice"]) == len(shown["bob"]) == 16
    flipped = [item for item in shown["alice"] if shown["alice"][item] != shown["bob"][item]]
    assert 0 < len(flipped) < 16  # a per-reviewer shuffle, not one order for everybody
    lefts = [order[0] for order in shown["alice"].values()]
    assert 0 < lefts.count("acme@2") < 16  # nor one model always on the left


def test_a_reviewer_cannot_judge_an_item_twice(any_registry: Registry) -> None:
    store, people = ReviewStore(any_registry), make_people(any_registry)
    task = store.create(people.admin, "t", ReviewKind.pairwise, pairwise_items(3), source={}, tenant="acme",
                        reviewers_per_item=1)  # fmt: skip
    view = store.next_item(task.id, people.alice)
    assert view is not None
    store.record(task.id, view.item_id, people.alice, choice=Choice.tie)
    with pytest.raises(ConfigError, match="alice has already judged item"):
        store.record(task.id, view.item_id, people.alice, choice=Choice.a)
    assert store.next_item(task.id, people.alice) != view
    for reviewer in (people.alice, people.bob):  # one reviewer per item: the other two items, then none
        while (left := store.next_item(task.id, reviewer)) is not None:
            store.record(task.id, left.item_id, reviewer, choice=Choice.b)
    progress = store.progress(task.id, people.admin)
    assert (progress.judged, progress.complete_items, progress.needed) == (3, 3, 3)


def test_tenants_see_only_their_tasks_and_roles_limit_what_they_do(
    store: ReviewStore, people: People
) -> None:
    task = store.create(people.admin, "t", ReviewKind.pairwise, pairwise_items(2), source={}, tenant="acme")
    assert [t.id for t in store.list_tasks(people.alice)] == [task.id]
    assert store.list_tasks(people.carol) == []
    item = store.items(task.id, people.admin)[0]["id"]
    for attempt in (
        lambda: store.get(task.id, people.carol),
        lambda: store.next_item(task.id, people.carol),
        lambda: store.record(task.id, item, people.carol, choice=Choice.a),
        lambda: store.results(task.id, people.carol),
    ):
        with pytest.raises(NotFoundError):
            attempt()
    with pytest.raises(ForbiddenError, match="judging needs"):
        store.next_item(task.id, people.viewer)
    with pytest.raises(ForbiddenError, match="creating a review task needs the admin role"):
        store.create(people.alice, "mine", ReviewKind.pairwise, pairwise_items(1), source={}, tenant="acme")
    assert store.progress(task.id, people.viewer).judged == 0  # a viewer reads
    untenanted = store.create(people.admin, "house", ReviewKind.pairwise, pairwise_items(1), source={})
    house = Caller(None, False, 99, name="dana", role=Role.reviewer)  # a reviewer key made without --tenant
    assert [t.id for t in store.list_tasks(house)] == [untenanted.id]
    assert [t.id for t in store.list_tasks(people.alice)] == [task.id]


def test_every_change_is_audited_with_who_made_it(any_registry: Registry) -> None:
    registry = any_registry
    store, people = ReviewStore(registry), make_people(registry)
    task = store.create(people.admin, "t", ReviewKind.pairwise, pairwise_items(1), source={"evaluation": "e"},
                        tenant="acme")  # fmt: skip
    view = store.next_item(task.id, people.alice)
    assert view is not None
    judgement = store.record(task.id, view.item_id, people.alice, choice=Choice.b, comment="crisper")
    store.close(task.id, people.admin)
    records = [r for r in read_log(registry) if r["target"] == f"review:{task.id}"]
    assert [(r["action"], r["actor"]) for r in records] == [
        ("review.create", f"key:{people.admin.key_id}"),
        ("review.judge", f"key:{people.alice.key_id}"),
        ("review.close", f"key:{people.admin.key_id}"),
    ]
    assert records[1]["after"]["preferred"] == judgement.shown[1] and records[0]["after"]["items"] == 1
    assert verify_registry(registry).bad_id is None
    with pytest.raises(ConfigError, match="closed"):
        store.next_item(task.id, people.bob)


def test_judgements_must_fit_the_task_kind(store: ReviewStore, people: People) -> None:
    items = [NewItem([{"role": "user", "content": "q"}], None, [{"model": "m", "text": "a"}], {})]
    rubric = store.create(
        people.admin, "r", ReviewKind.rubric, items, source={}, rubric=RUBRIC, tenant="acme"
    )
    view = store.next_item(rubric.id, people.alice)
    assert (
        view is not None and view.rubric is not None and set(view.rubric["criteria"]) == {"voice", "accuracy"}
    )
    with pytest.raises(ConfigError, match="scores every criterion: accuracy, voice"):
        store.record(rubric.id, view.item_id, people.alice, scores={"voice": 4})
    with pytest.raises(ConfigError, match="scores must be 1-5"):
        store.record(rubric.id, view.item_id, people.alice, scores={"voice": 4, "accuracy": 6})
    with pytest.raises(ConfigError, match="is a choice"):
        pairwise = store.create(
            people.admin, "p", ReviewKind.pairwise, pairwise_items(1), source={}, tenant="acme"
        )
        store.record(
            pairwise.id, store.items(pairwise.id, people.admin)[0]["id"], people.alice, scores={"voice": 3}
        )
    with pytest.raises(ConfigError, match="needs a rubric"):
        store.create(people.admin, "r2", ReviewKind.rubric, items, source={}, tenant="acme")
    with pytest.raises(ConfigError, match="item 0: a pairwise item has 2 output"):
        store.create(people.admin, "p2", ReviewKind.pairwise, items, source={}, tenant="acme")
    stored = store.record(rubric.id, view.item_id, people.alice, scores={"voice": 4, "accuracy": 5},
                          edited_text="a, better")  # fmt: skip
    assert stored.scores == {"voice": 4, "accuracy": 5} and stored.edited_text == "a, better"
