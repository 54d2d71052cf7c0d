"""`POST /v1/feedback`: a rating, comment, correction, preference or ranking on a response the caller got."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tunesmith.registry.serving_store import NotFoundError
from tunesmith.serve.deps import CallerDep, StoreDep
from tunesmith.serve.errors import APIError
from tunesmith.serve.schemas import FeedbackCreate, FeedbackPublic

router = APIRouter(prefix="/v1")

_THUMBS_RATING = {"up": 5, "down": 1}


@router.post("/feedback", status_code=201)
async def create_feedback(body: FeedbackCreate, caller: CallerDep, store: StoreDep) -> FeedbackPublic:
    """Store feedback next to the logged request, for preference data and quality monitoring."""
    rating = body.rating if body.rating is not None else _THUMBS_RATING.get(body.thumbs or "")
    try:
        feedback_id = await run_in_threadpool(
            store.record_feedback, caller, body.response_id, rating=rating, thumbs=body.thumbs,
            comment=body.comment, correction=body.correction, preferred_over=body.preferred_over, ranking=body.ranking,
        )  # fmt: skip
    except NotFoundError as error:
        raise APIError(404, str(error), param="response_id", code="response_not_found") from error
    return FeedbackPublic(id=feedback_id, response_id=body.response_id)
