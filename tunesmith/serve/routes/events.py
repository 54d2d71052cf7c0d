"""`POST /v1/events`: a click, conversion or named outcome that followed a response the caller got."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tunesmith.registry.serving_store import NotFoundError
from tunesmith.serve.deps import CallerDep, MonitorStoreDep
from tunesmith.serve.errors import APIError
from tunesmith.serve.schemas import OutcomeCreate, OutcomePublic

router = APIRouter(prefix="/v1")


@router.post("/events", status_code=201)
async def create_event(body: OutcomeCreate, caller: CallerDep, store: MonitorStoreDep) -> OutcomePublic:
    """Store the outcome next to the logged response, for A/B tests on business outcomes."""
    try:
        event_id = await run_in_threadpool(
            store.record_outcome, caller, body.response_id, body.name, body.value
        )
    except NotFoundError as error:
        raise APIError(404, str(error), param="response_id", code="response_not_found") from error
    return OutcomePublic(id=event_id, response_id=body.response_id, name=body.name)
