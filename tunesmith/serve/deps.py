"""FastAPI dependencies: the caller (from the API key) and the app's service objects.

Owns: reading `Authorization: Bearer <key>` and turning it into a `Caller` (or a 401; an address
with too many failed keys gets a 429 before its key is looked at), the admin check (403), and
handing routes what `create_app` put on `app.state`. Does not own: key storage.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import ServingStore
from tunesmith.serve.errors import APIError
from tunesmith.serve.limits import AuthFailureLimit, LimitError
from tunesmith.serve.service import ServingService

_ANYONE = Caller(tenant=None, is_admin=True)  # auth off (explicitly, for local use)


def too_many(request: Request, error: LimitError) -> APIError:
    """A 429 for a limit refusal, with `Retry-After`, counted by limit."""
    request.app.state.metrics.limits_hit.labels(error.limit).inc()
    return APIError(
        429, error.message, type_="rate_limit_error", code="rate_limit_exceeded",
        headers={"Retry-After": str(error.retry_after)},
    )  # fmt: skip


async def get_caller(request: Request) -> Caller:
    if not request.app.state.auth:
        return _ANYONE
    failures: AuthFailureLimit = request.app.state.auth_failures
    client = request.client.host if request.client else "-"
    try:
        failures.check(client)
    except LimitError as error:
        raise too_many(request, error) from None
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise APIError(
            401, "missing API key: send 'Authorization: Bearer <key>' (create one with `tunesmith keys create`)",
            type_="authentication_error", code="invalid_api_key",
        )  # fmt: skip
    store: ServingStore = request.app.state.store
    caller = await run_in_threadpool(store.authenticate, key.strip())
    if caller is None:
        failures.record_failure(client)
        raise APIError(
            401, "invalid or revoked API key", type_="authentication_error", code="invalid_api_key"
        )
    return caller


async def get_admin(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
    if not caller.is_admin:
        raise APIError(403, "this endpoint needs an admin key", type_="permission_error", code="admin_only")
    return caller


def get_service(request: Request) -> ServingService:
    service: ServingService = request.app.state.service
    return service


def get_store(request: Request) -> ServingStore:
    store: ServingStore = request.app.state.store
    return store


def get_monitor_store(request: Request) -> MonitorStore:
    store: MonitorStore = request.app.state.monitor_store
    return store


CallerDep = Annotated[Caller, Depends(get_caller)]
AdminDep = Annotated[Caller, Depends(get_admin)]
ServiceDep = Annotated[ServingService, Depends(get_service)]
StoreDep = Annotated[ServingStore, Depends(get_store)]
MonitorStoreDep = Annotated[MonitorStore, Depends(get_monitor_store)]
