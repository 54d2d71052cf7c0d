from __future__ import annotations

from typing import Any

from tunesmith.data.feedback import feedback_rows

HI = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
PROMPT = HI["messages"]


def _request(id_: str, output: str, prompt: dict[str, Any] = HI) -> dict[str, Any]:
    return {"id": id_, "prompt": prompt, "outputs": [output]}


def _feedback(id_: int, response: str, **fields: Any) -> dict[str, Any]:
    return {"id": id_, "response_id": response, "rating": None, "thumbs": None, "comment": None,
            "correction": None, "preferred_over": None} | fields  # fmt: skip


def _ids(request: str, item: int) -> dict[str, Any]:
    return {"request_id": request, "source_ids": {"request_id": request, "feedback_id": item}}


def test_each_kind_of_feedback_becomes_its_rows_linked_to_request_and_feedback() -> None:
    requests = [_request("a", "Hello!"), _request("b", "What."), _request("c", "Hey"), _request("d", "Yo")]
    feedback = [
        _feedback(1, "a", preferred_over="b"),
        _feedback(2, "b", correction="Hello there!"),
        _feedback(3, "c", rating=5, thumbs="up"),
        _feedback(4, "d", rating=1),
    ]
    rows = feedback_rows(requests, feedback)
    assert rows.dpo == [
        {"prompt": PROMPT, "chosen": "Hello!", "rejected": "What.", "request_id": "a",
         "source_ids": {"request_id": "a", "feedback_id": 1, "other_request_id": "b"}},
        {"prompt": PROMPT, "chosen": "Hello there!", "rejected": "What.", **_ids("b", 2)},
    ]  # fmt: skip
    assert rows.sft == [
        {"messages": [*PROMPT, {"role": "assistant", "content": "Hello there!"}], **_ids("b", 2)}
    ]
    assert rows.kto == [
        {"prompt": PROMPT, "completion": "Hey", "label": True, **_ids("c", 3)},
        {"prompt": PROMPT, "completion": "Yo", "label": False, **_ids("d", 4)},
    ]
    assert rows.unused == []


def test_feedback_that_gives_no_row_is_listed_with_why() -> None:
    requests = [_request("a", "Hi"), _request("b", "Hi"), _request("c", "Ho", {"prompt": "other"})]
    feedback = [
        _feedback(1, "a", preferred_over="b"),
        _feedback(2, "a", preferred_over="c"),
        _feedback(3, "a", rating=3),
        _feedback(4, "a", comment="meh"),
    ]
    rows = feedback_rows(requests, feedback, good_rating=5, bad_rating=1)
    assert (rows.dpo, rows.sft, rows.kto) == ([], [], [])
    assert rows.unused == [
        "feedback 1: the preferred answer is the same as the other",
        "feedback 2: the two answers were to different prompts",
        "feedback 3: rating 3 is neither good (>= 5) nor bad (<= 1)",
        "feedback 4: a comment only, no rating, correction or preference",
    ]


def test_a_ranking_becomes_every_pair_it_implies_best_first() -> None:
    requests = [_request("a", "Hello!"), _request("b", "Hi."), _request("c", "What.")]
    rows = feedback_rows(requests, [_feedback(1, "b", ranking=["a", "b", "c"])])
    pairs = [(row["chosen"], row["rejected"], row["source_ids"]) for row in rows.dpo]
    links = {"request_id": "b", "feedback_id": 1}
    assert pairs == [
        ("Hello!", "Hi.", links | {"chosen_request_id": "a", "rejected_request_id": "b"}),
        ("Hello!", "What.", links | {"chosen_request_id": "a", "rejected_request_id": "c"}),
        ("Hi.", "What.", links | {"chosen_request_id": "b", "rejected_request_id": "c"}),
    ]
    assert rows.unused == []


def test_a_ranking_across_prompts_gives_no_pair_and_says_why() -> None:
    requests = [_request("a", "Hello!"), _request("c", "Ho", {"prompt": "other"})]
    rows = feedback_rows(requests, [_feedback(1, "a", ranking=["a", "c"])])
    assert rows.dpo == []
    assert rows.unused == ["feedback 1: the ranked answers were not all to the same prompt"]


def test_feedback_on_a_request_logged_without_its_text_gives_no_row_and_says_why() -> None:
    rows = feedback_rows([{"id": "a", "prompt": {}, "outputs": []}], [_feedback(1, "a", thumbs="up")])
    assert (rows.dpo, rows.sft, rows.kto) == ([], [], [])
    assert rows.unused == ["feedback 1: request a was logged without its text"]
