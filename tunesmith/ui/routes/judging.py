"""The review screen: one item at a time, blind (outputs as A and B in this reviewer's order, no model
names until the vote is in), with keyboard shortcuts (a/b/t/x, 1-5, Enter; see `static/ui.js`).

A judgement goes to `ReviewStore.record` with what the form says: the choice as shown, a score per
rubric criterion, the edit box's text when it differs from the output (compared by hash, so the page
need not send the output back), the comment, and the seconds since the item was shown. The next page
reveals which model was A and which was B on the item just judged.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tunesmith.config import ConfigError
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import NotFoundError
from tunesmith.review.records import Choice, ItemView, ReviewKind
from tunesmith.review.store import ForbiddenError, reviewer_id
from tunesmith.ui.routes.reviews import review_errors, reviews
from tunesmith.ui.web import CallerDep, ConsoleState, CsrfDep, StateDep, UiError, page_url, render

router = APIRouter()
MAX_SECONDS = 3600.0  # an item left open over lunch counts as an hour


def text_hash(text: str) -> str:
    """The hash the edit box is compared by (browsers send a textarea's line ends as CRLF)."""
    return hashlib.sha256(text.replace("\r\n", "\n").encode("utf-8")).hexdigest()


def _screen(request: Request, state: ConsoleState, caller: Caller, task_id: int, revealed: int | None,
            error: str | None = None) -> HTMLResponse:  # fmt: skip
    store = reviews(state)
    with review_errors():
        task = store.get(task_id, caller)
        try:
            item: ItemView | None = store.next_item(task_id, caller)
        except (ForbiddenError, NotFoundError):
            raise
        except ConfigError as closed:
            raise UiError(400, str(closed)) from None
        last = None
        if revealed is not None:  # the reviewer's own judgement only
            mine = reviewer_id(caller)
            last = next((j for j in store.judgements(task_id, caller) if j.id == revealed and j.reviewer == mine),
                        None)  # fmt: skip
        progress = store.progress(task_id, caller) if item is None else None
    return render(
        request, "review_item.html", status=400 if error else 200, task=task, item=item, last=last,
        error=error, shown_at=f"{time.time():.3f}", kinds=ReviewKind,
        original=text_hash(item.outputs[0]) if item is not None else "", progress=progress,
    )  # fmt: skip


@router.get("/reviews/{task_id}/next")
def review_screen(
    request: Request, state: StateDep, caller: CallerDep, task_id: int, revealed: int | None = None
) -> HTMLResponse:
    return _screen(request, state, caller, task_id, revealed)


def _judgement(form: Any, rubric: dict[str, Any] | None) -> dict[str, Any]:
    """The store's keyword arguments from the form; ConfigError naming what is missing or wrong."""
    choice_text = str(form.get("choice") or "")
    if choice_text and choice_text not in list(Choice):
        raise ConfigError(f"choice {choice_text!r}: one of {', '.join(Choice)}")
    scores = None
    if rubric is not None:
        missing = [c for c in rubric["criteria"] if not str(form.get(f"score_{c}") or "").isdigit()]
        if missing:
            raise ConfigError(f"score every criterion (1-5; keys 1-5): {', '.join(missing)} not scored")
        scores = {c: int(str(form.get(f"score_{c}"))) for c in rubric["criteria"]}
    edited = form.get("edited")
    edited_text = None
    if isinstance(edited, str) and text_hash(edited) != form.get("original"):
        edited_text = edited.replace("\r\n", "\n")
    comment = str(form.get("comment") or "").strip() or None
    try:
        seconds = min(max(time.time() - float(str(form.get("shown_at"))), 0.0), MAX_SECONDS)
    except ValueError:
        seconds = None
    return {"choice": Choice(choice_text) if choice_text else None, "scores": scores, "edited_text": edited_text,
            "comment": comment, "seconds": seconds}  # fmt: skip


@router.post("/reviews/{task_id}/items/{item_id}", dependencies=[CsrfDep])
async def record_judgement(
    request: Request, state: StateDep, caller: CallerDep, task_id: int, item_id: int
) -> Response:
    form = await request.form()
    store = reviews(state)
    with review_errors():
        task = await run_in_threadpool(store.get, task_id, caller)
        try:
            values = _judgement(form, task.rubric)
            judgement = await run_in_threadpool(lambda: store.record(task_id, item_id, caller, **values))
        except (ForbiddenError, NotFoundError):
            raise
        except ConfigError as refused:
            return await run_in_threadpool(_screen, request, state, caller, task_id, None, str(refused))
    return RedirectResponse(
        page_url(request, f"/reviews/{task_id}/next", revealed=judgement.id), status_code=303
    )
