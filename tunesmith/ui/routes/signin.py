"""Signing in with an API key (`tunesmith keys create`) and out; `/` goes to the runs list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tunesmith.serve.limits import LimitError
from tunesmith.ui.auth import ANONYMOUS, new_session
from tunesmith.ui.web import CsrfDep, StateDep, UiError, ViewerDep, page_url, render

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never `//elsewhere` or a full URL) is followed after sign-in."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return ""


@router.get("/")
async def home(request: Request) -> Response:
    return RedirectResponse(page_url(request, "/runs"), status_code=303)


@router.get("/login")
async def login_page(
    request: Request, state: StateDep, viewer: ViewerDep, next: str | None = None
) -> Response:
    if not state.auth:  # the local user is signed in already
        return RedirectResponse(page_url(request, "/runs"), status_code=303)
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/login", dependencies=[CsrfDep])
async def login(
    request: Request, state: StateDep, key: Annotated[str, Form()] = "", next: Annotated[str, Form()] = ""
) -> Response:
    """Check the key (hashed lookup, as the API does), then start a new session for it."""
    client = request.client.host if request.client else "-"
    try:
        state.login_failures.check(client)
    except LimitError as error:
        raise UiError(429, error.message) from None
    caller = await run_in_threadpool(state.store.authenticate, key.strip()) if key.strip() else None
    if caller is None or caller.key_id is None:
        state.login_failures.record_failure(client)
        return render(request, "login.html", status=401, next=_safe_next(next),
                      error="invalid or revoked API key (create one with `tunesmith keys create`)")  # fmt: skip
    request.state.session = new_session(str(caller.key_id))
    target = _safe_next(next)
    return RedirectResponse(target or page_url(request, "/runs"), status_code=303)


@router.post("/logout", dependencies=[CsrfDep])
async def logout(request: Request) -> Response:
    request.state.session = new_session(ANONYMOUS)
    return RedirectResponse(page_url(request, "/login"), status_code=303)
