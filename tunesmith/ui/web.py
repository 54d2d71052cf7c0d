"""What every console page shares: the app's state, who is viewing, rendering a template, errors and the
CSRF check. No torch.

Owns: `ConsoleState` (what `create_ui_app` puts on `app.state.console`), resolving the session cookie to
a `Viewer` (the key is looked up on every request, so a revoked key is signed out at once), the FastAPI
dependencies pages use (`ViewerDep`, `CallerDep`: signed in or redirected to sign-in; `AdminDep`: 403
for a non-admin; `CsrfDep`: 403 for a POST without this session's token), the Jinja environment
(autoescape on for every template: model output and user text are always escaped) and the error page.
Does not own: the cookie format (`auth`), the queries (`queries`) or any page's content (`routes/`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader
from starlette.concurrency import run_in_threadpool

from tunesmith.audit.trail import key_actor, local_actor
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.limits import AuthFailureLimit
from tunesmith.ui.auth import LOCAL, Session, csrf_token, is_valid_csrf
from tunesmith.ui.queries import caller_for_key

PACKAGE_DIR = Path(__file__).parent


class UiError(Exception):
    """A page refused: its status and a message for the person (never internals)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class SignInRequired(Exception):
    """The page needs a signed-in viewer: the app redirects to the sign-in page."""


@dataclass
class ConsoleState:
    """What the routes share, set once by `create_ui_app`."""

    registry: Registry
    store: ServingStore
    secret: bytes
    auth: bool
    login_failures: AuthFailureLimit
    require_bias_audit: bool
    templates: Environment


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page: the session, and the caller it signs in as (None: not signed in)."""

    session: Session
    caller: Caller | None

    @property
    def is_admin(self) -> bool:
        return self.caller is not None and self.caller.is_admin

    @property
    def actor(self) -> str:
        """The audit trail's actor for what this viewer changes: their key, or the local user."""
        assert self.caller is not None
        return key_actor(self.caller.key_id) if self.caller.key_id is not None else local_actor()

    @property
    def label(self) -> str:
        if self.caller is None:
            return "not signed in"
        if self.caller.key_id is None:
            return "local (no auth)"
        who = self.caller.name or f"key {self.caller.key_id}"
        tenant = f", tenant {self.caller.tenant}" if self.caller.tenant else ""
        return f"{who} ({self.caller.account_role}{tenant})"


def make_templates() -> Environment:
    """The Jinja environment: package templates, autoescape on for all of them."""
    environment = Environment(loader=PackageLoader("tunesmith.ui", "templates"), autoescape=True)
    environment.filters["num"] = format_value
    environment.filters["when"] = format_time
    return environment


def format_value(value: Any) -> str:
    """A metric or count as a table shows it: 4 significant digits, integers with separators."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    return f"{value:.4g}"


def format_time(value: datetime | str | None) -> str:
    if value is None:
        return "–"
    text = value.isoformat() if isinstance(value, datetime) else value
    return text[:19].replace("T", " ")


def console(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def _resolve(state: ConsoleState, session: Session) -> Viewer:
    if session.who == LOCAL:
        return Viewer(session, Caller(tenant=None, is_admin=True))
    key_id = session.key_id
    return Viewer(session, None if key_id is None else caller_for_key(state.registry, key_id))


async def get_viewer(request: Request) -> Viewer:
    viewer: Viewer | None = request.state.viewer  # resolved once per request
    if viewer is None:
        viewer = await run_in_threadpool(_resolve, console(request), request.state.session)
        request.state.viewer = viewer
    return viewer


async def get_caller(viewer: Annotated[Viewer, Depends(get_viewer)]) -> Caller:
    if viewer.caller is None:
        raise SignInRequired
    return viewer.caller


async def get_admin(
    viewer: Annotated[Viewer, Depends(get_viewer)], caller: Annotated[Caller, Depends(get_caller)]
) -> Viewer:
    if not caller.is_admin:
        raise UiError(403, "this action needs an admin key")
    return viewer


async def check_csrf(request: Request) -> None:
    """403 unless the form carries this session's CSRF token (every POST depends on this)."""
    form = await request.form()
    token = form.get("csrf_token")
    if not is_valid_csrf(
        request.state.session, console(request).secret, token if isinstance(token, str) else None
    ):
        raise UiError(403, "the form's security token is missing or stale: reload the page and try again")


ViewerDep = Annotated[Viewer, Depends(get_viewer)]
CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Viewer, Depends(get_admin)]
CsrfDep = Depends(check_csrf)
StateDep = Annotated[ConsoleState, Depends(console)]


def page_url(request: Request, path: str, **params: Any) -> str:
    """`path` under where the console is mounted (`/ui` inside `serve`), with a query string."""
    query = urlencode({key: value for key, value in params.items() if value not in (None, "")}, doseq=True)
    return f"{request.scope.get('root_path', '')}{path}" + (f"?{query}" if query else "")


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page: the template with the viewer, this session's CSRF token and `url` for links."""
    state = console(request)
    viewer: Viewer | None = request.state.viewer

    def url(path: str, **params: Any) -> str:
        return page_url(request, path, **params)

    def here(**changes: Any) -> str:
        """This page's URL with some query parameters changed (sort links, pages)."""
        params: dict[str, Any] = {key: request.query_params.getlist(key) for key in request.query_params}
        params.update(changes)
        query = urlencode(
            {key: value for key, value in params.items() if value not in (None, "")}, doseq=True
        )
        return request.url.path + (f"?{query}" if query else "")

    body = state.templates.get_template(template).render(
        url=url, here=here, viewer=viewer, csrf_token=csrf_token(request.state.session, state.secret),
        auth=state.auth, **context,
    )  # fmt: skip
    return HTMLResponse(body, status_code=status)
