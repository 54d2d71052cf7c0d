"""The console's composition root: `create_ui_app(registry, ...)` builds the app, `run_ui(...)` serves it.

Owns: wiring state, routes, the static assets (shipped in the package: no CDN), the session cookie
(every visitor gets one, so even the sign-in form has a CSRF token; see `auth`), security headers (a
Content-Security-Policy that allows only this origin's scripts and styles, no framing) and the error
pages. `tunesmith serve --ui` mounts the same app at /ui. Does not own: any page's content (`routes/`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from tunesmith.config import LOOPBACK_HOSTS, ConfigError, tunesmith_home
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.limits import AuthFailureLimit
from tunesmith.ui.auth import (
    ANONYMOUS,
    LOCAL,
    SESSION_COOKIE,
    SESSION_MAX_AGE_S,
    load_secret,
    new_session,
    read_session,
    sign_session,
)
from tunesmith.ui.routes import datasets, deployments, evaluations, judging, reviews, runs, signin
from tunesmith.ui.web import (
    PACKAGE_DIR,
    ConsoleState,
    SignInRequired,
    UiError,
    get_viewer,
    make_templates,
    page_url,
    render,
)

ROUTERS = (signin.router, runs.router, datasets.router, evaluations.router, deployments.router, reviews.router,
           judging.router)  # fmt: skip
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


def create_ui_app(
    registry: Registry,
    *,
    auth: bool = True,
    secret_path: Path | None = None,
    require_bias_audit: bool = False,
) -> FastAPI:
    """The console over a connected registry. `auth=False`: the local single user, an admin (loopback only,
    as `serve --no-auth`). `secret_path`: the session-signing secret (default `TUNESMITH_HOME/ui_secret`)."""
    app = FastAPI(title="tunesmith console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = ConsoleState(
        registry=registry, store=ServingStore(registry),
        secret=load_secret(secret_path or tunesmith_home() / "ui_secret"), auth=auth,
        login_failures=AuthFailureLimit(10, window_s=60), require_bias_audit=require_bias_audit,
        templates=make_templates(),
    )  # fmt: skip
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=PACKAGE_DIR / "static"), name="static")
    app.middleware("http")(_session_cookie)
    if not auth:  # open only to this machine: refuse other Host names (DNS rebinding), as `serve` does
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_HOSTS, "[::1]"])
    _install_errors(app)
    return app


async def _session_cookie(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Read the session cookie (a fresh one for a new, forged or expired cookie); write it back when the
    page changed the session (sign in, sign out) or it is new; add the security headers."""
    state: ConsoleState = request.app.state.console
    session = read_session(request.cookies.get(SESSION_COOKIE), state.secret)
    fresh = (
        session is None or (session.who == LOCAL) == state.auth
    )  # none, bad, or another mode's: start again
    if session is None or fresh:
        session = new_session(ANONYMOUS if state.auth else LOCAL)
    request.state.session = session
    request.state.viewer = None  # resolved by the first dependency that asks (`web.get_viewer`)
    response = await call_next(request)
    if fresh or request.state.session != session:
        response.set_cookie(
            SESSION_COOKIE, sign_session(request.state.session, state.secret), max_age=SESSION_MAX_AGE_S,
            path=request.scope.get("root_path") or "/", httponly=True, samesite="lax",
            secure=request.url.scheme == "https",
        )  # fmt: skip
    response.headers.update(SECURITY_HEADERS)
    return response


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(UiError)
    async def refused(request: Request, error: UiError) -> Response:
        await get_viewer(request)  # the page's header shows who is signed in, as on any page
        return render(request, "error.html", status=error.status, message=error.message)

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, error: SignInRequired) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(page_url(request, "/login") + f"?next={quote(target)}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = "no such page" if error.status_code == 404 else str(error.detail)
        await get_viewer(request)
        return render(request, "error.html", status=error.status_code, message=message)

    @app.exception_handler(ConfigError)
    async def bad_input(request: Request, error: ConfigError) -> Response:
        await get_viewer(request)
        return render(request, "error.html", status=400, message=str(error))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, error: RequestValidationError) -> Response:
        """A query or form value of the wrong kind: a 400 naming it, not a JSON dump."""
        await get_viewer(request)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in error.errors())
        return render(request, "error.html", status=400, message=f"bad request: {problems}")


def check_host(host: str, *, auth: bool) -> None:
    """Without auth the console listens on this machine only (as `serve --no-auth`); ConfigError otherwise."""
    if not auth and host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"--no-auth lets anyone who can reach the port act as admin; only with --host on this machine "
            f"({', '.join(sorted(LOOPBACK_HOSTS))}), not {host}"
        )


def run_ui(host: str, port: int, *, auth: bool) -> None:
    """Serve the console over the default registry until interrupted; without auth, loopback only."""
    import uvicorn

    from tunesmith.config import default_database_url

    check_host(host, auth=auth)
    app = create_ui_app(Registry(default_database_url()).connect(), auth=auth)
    uvicorn.run(app, host=host, port=port, log_level="info")
