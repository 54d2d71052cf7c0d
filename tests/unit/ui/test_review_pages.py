"""The review pages through the app (no browser): who may do what, creating a task from the form, refusals
with reasons, escaping, and the export button producing a dataset `data inspect` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.ui_registry import Filled, Reviews, fill, fill_reviews
from tests.unit.ui.test_pages import signed_in, token
from tunesmith.audit.privacy import RequestLogMode
from tunesmith.data.output import inspect_dataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Filled, Reviews, Path]:
    root = tmp_path_factory.mktemp("reviews")
    filled = fill(root)
    return filled, fill_reviews(filled), root


def client(setup: tuple[Filled, Reviews, Path], who: str) -> TestClient:
    filled, reviews, root = setup
    filled.keys.update(reviews.keys)
    return signed_in(filled, root, who)


def test_who_may_see_and_judge(setup: tuple[Filled, Reviews, Path]) -> None:
    _, reviews, _ = setup
    assert client(setup, "vic").get(f"/reviews/{reviews.pairwise}/next").status_code == 403  # a viewer
    assert client(setup, "vic").get(f"/reviews/{reviews.pairwise}/results").status_code == 200
    globex = client(setup, "globex")
    for path in (
        f"/reviews/{reviews.pairwise}",
        f"/reviews/{reviews.pairwise}/next",
        f"/reviews/{reviews.rubric}/results",
    ):
        assert globex.get(path).status_code == 404, path
    assert "taglines" not in globex.get("/reviews").text
    alice = client(setup, "alice")
    assert alice.get("/reviews/new").status_code == 403
    assert "taglines" in alice.get("/reviews").text


def test_a_judgement_needs_its_fields_and_the_token(setup: tuple[Filled, Reviews, Path]) -> None:
    _, reviews, _ = setup
    alice = client(setup, "alice")
    page = alice.get(f"/reviews/{reviews.rubric}/next")
    assert "&lt;script&gt;window.__xss" in page.text and "<script>window.__xss" not in page.text
    action = page.text.split('id="judgement"')[0].rsplit('action="', 1)[1].split('"')[0]
    assert alice.post(action, data={"score_voice": "4", "score_accuracy": "4"}).status_code == 403  # no token
    refused = alice.post(action, data={"csrf_token": token(page.text), "score_voice": "4"})
    assert refused.status_code == 400 and "accuracy not scored" in refused.text
    assert reviews.store.judgements(reviews.rubric, reviews.admin) == []


def test_the_admin_creates_a_task_from_served_requests(setup: tuple[Filled, Reviews, Path]) -> None:
    filled, reviews, _ = setup
    filled.store.set_request_logging("acme", RequestLogMode.FULL)
    for index in range(3):
        filled.store.log_request(prompt={"messages": [{"role": "user", "content": f"hello {index}"}]}, outputs=[f"hi {index}"],
                                 id=f"full-{index}", tenant="acme", endpoint="chat", requested_model=filled.deployment,
                                 deployment=filled.deployment, variant="acme-adapter@1", user=None,
                                 finish_reasons=["stop"], prompt_tokens=2, completion_tokens=1, latency_ms=5.0)  # fmt: skip
    admin = client(setup, "admin")
    form = admin.get("/reviews/new")
    data = {"csrf_token": token(form.text), "name": "served answers", "kind": "rubric",
            "source": f"deployment:{filled.deployment}", "sample": "3", "reviewers": "1",
            "rubric": "criteria:\n  helpful: Does it help?\n"}  # fmt: skip
    bad = admin.post("/reviews", data={**data, "rubric": "criteria: [oops"})
    assert bad.status_code == 400 and "rubric" in bad.text
    created = admin.post("/reviews", data=data)
    assert created.status_code == 200 and "served answers" in created.text
    task = reviews.store.list_tasks(reviews.admin)[0]
    assert (task.name, task.items, task.tenant, task.rubric["criteria"]) == (
        "served answers",
        3,
        "acme",
        {"helpful": "Does it help?"},
    )


def test_export_turns_judgements_into_a_dataset(
    setup: tuple[Filled, Reviews, Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    filled, reviews, _ = setup
    for name in ("alice", "bob"):
        reviewer = filled.store.authenticate(reviews.keys[name])
        assert reviewer is not None
        while (item := reviews.store.next_item(reviews.pairwise, reviewer)) is not None:
            choice = "A" if item.outputs[0].startswith("acme-adapter@1") else "B"
            reviews.store.record(reviews.pairwise, item.item_id, reviewer, choice=choice)  # type: ignore[arg-type]
    admin = client(setup, "admin")
    page = admin.get(f"/reviews/{reviews.pairwise}")
    out = tmp_path / "exported"
    done = admin.post(f"/reviews/{reviews.pairwise}/export",
                      data={"csrf_token": token(page.text), "out": str(out), "model": str(tiny_model_dir)})  # fmt: skip
    assert done.status_code == 200, done.text[-500:]
    assert 'id="exported"' in done.text
    summary = inspect_dataset(out / "dpo")
    assert summary["rows"] == 10 and summary["hash"][:12] in done.text


def test_data_and_model_vs_human_items_show_what_their_kind_needs(
    setup: tuple[Filled, Reviews, Path],
) -> None:
    from tunesmith.review.records import HUMAN, NewItem, ReviewKind

    _, reviews, _ = setup
    prompt = [{"role": "user", "content": "opening hours?"}]
    row = reviews.store.create(reviews.admin, "rows", ReviewKind.data, [NewItem(prompt, None, [{"model": "data", "text": "9 to 5"}], {"line": 0})],
                               source={"test": True}, tenant="acme", reviewers_per_item=1)  # fmt: skip
    versus = reviews.store.create(reviews.admin, "human?", ReviewKind.model_vs_human,
                                  [NewItem(prompt, "the human answer", [{"model": "acme-adapter@1", "text": "the model answer"},
                                                                       {"model": HUMAN, "text": "the human answer"}], {"example": 0})],
                                  source={"test": True}, tenant="acme", reviewers_per_item=1)  # fmt: skip
    alice = client(setup, "alice")
    page = alice.get(f"/reviews/{row.id}/next").text
    assert 'value="approve" data-key="y"' in page and 'value="reject" data-key="n"' in page
    edited = alice.post(page.split('id="judgement"')[0].rsplit('action="', 1)[1].split('"')[0],
                        data={"csrf_token": token(page), "choice": "approve", "edited": "9 to 5, Mon-Fri",
                              "original": page.split('name="original" value="')[1].split('"')[0], "shown_at": "0"})  # fmt: skip
    assert edited.status_code == 200 and "Nothing left for you" in edited.text
    [judgement] = reviews.store.judgements(row.id, reviews.admin)
    assert judgement.edited_text == "9 to 5, Mon-Fri" and judgement.seconds == 3600.0  # capped
    page = alice.get(f"/reviews/{versus.id}/next").text
    assert 'class="message reference"' not in page  # blind: the reference is one of the two outputs
    assert "the model answer" in page and "the human answer" in page and "acme-adapter@1" not in page
