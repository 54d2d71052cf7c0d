"""Deployments: the list, and one deployment's page (variants and weights, traffic and feedback per
variant over time, history), with the admin's forms to change weights, promote and roll back.

The forms call the same `ServingStore` methods as `tunesmith deploy` and the admin API, with the
signed-in key as the actor, so the registry's history and audit trail record who did it.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from tunesmith.config import ConfigError
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_records import Caller, VariantWeight
from tunesmith.registry.serving_store import NotFoundError
from tunesmith.ui.charts import bar_chart, line_chart
from tunesmith.ui.traffic import traffic_series, variant_totals
from tunesmith.ui.web import AdminDep, CallerDep, ConsoleState, CsrfDep, StateDep, UiError, page_url, render

router = APIRouter()


@router.get("/deployments")
def deployment_list(request: Request, state: StateDep, caller: CallerDep) -> HTMLResponse:
    return render(request, "deployments.html", deployments=state.store.list_deployments(caller))


def _page(
    request: Request, state: ConsoleState, caller: Caller, name: str, error: str | None = None
) -> HTMLResponse:
    deployment = state.store.find_deployment(caller, name)
    if deployment is None:
        raise UiError(404, f"no deployment {name}")
    traffic = MonitorStore(state.registry).deployment_traffic(name)
    requests, ratings, x_label = traffic_series(traffic)
    adapters = sorted(
        {v["model"] for change in deployment["history"] for v in change["variants"]}
        | {
            a.key
            for a in state.store.visible_adapters(
                Caller(tenant=deployment["tenant"], is_admin=deployment["tenant"] is None)
            )
        }
    )
    return render(
        request, "deployment.html", status=400 if error else 200, deployment=deployment, error=error,
        weights_chart=bar_chart([(v["model"], v["weight"]) for v in deployment["variants"]], title="traffic weights"),
        requests_chart=line_chart(requests, title="requests per variant", x_label=x_label, y_label="requests"),
        ratings_chart=line_chart(ratings, title="mean feedback rating per variant", x_label=x_label, y_label="rating (1-5)"),
        totals=variant_totals(traffic), models=adapters,
    )  # fmt: skip


@router.get("/deployments/{name}")
def deployment_page(request: Request, state: StateDep, caller: CallerDep, name: str) -> HTMLResponse:
    return _page(request, state, caller, name)


async def _change(
    request: Request, state: ConsoleState, admin: Any, name: str, change: Any, *args: Any
) -> Response:
    """Apply a change through the store; back to the page, or the page with the reason it was refused."""
    caller = admin.caller
    if await run_in_threadpool(state.store.find_deployment, caller, name) is None:
        raise UiError(404, f"no deployment {name}")
    try:
        await run_in_threadpool(lambda: change(name, *args, actor=admin.actor))
    except NotFoundError as error:
        raise UiError(404, str(error)) from None
    except ConfigError as error:
        return await run_in_threadpool(_page, request, state, caller, name, str(error))
    return RedirectResponse(page_url(request, f"/deployments/{name}"), status_code=303)


@router.post("/deployments/{name}/weights", dependencies=[CsrfDep])
async def set_weights(
    request: Request, state: StateDep, admin: AdminDep, name: str,
    model: Annotated[list[str], Form()], weight: Annotated[list[str], Form()],
) -> Response:  # fmt: skip
    variants: list[VariantWeight] = []
    for model_name, text in zip(model, weight, strict=False):
        if not model_name.strip():
            continue  # an empty row of the form
        try:
            variants.append({"model": model_name.strip(), "weight": float(text)})
        except ValueError:
            raise UiError(400, f"weight of {model_name}: expected a number, got {text!r}") from None

    def change(name: str, *, actor: str) -> None:
        state.store.set_weights(name, variants, require_bias_audit=state.require_bias_audit, actor=actor)

    return await _change(request, state, admin, name, change)


@router.post("/deployments/{name}/promote", dependencies=[CsrfDep])
async def promote(
    request: Request, state: StateDep, admin: AdminDep, name: str, model: Annotated[str, Form()]
) -> Response:
    def change(name: str, *, actor: str) -> None:
        state.store.promote(name, model.strip(), require_bias_audit=state.require_bias_audit, actor=actor)

    return await _change(request, state, admin, name, change)


@router.post("/deployments/{name}/rollback", dependencies=[CsrfDep])
async def rollback(request: Request, state: StateDep, admin: AdminDep, name: str) -> Response:
    return await _change(request, state, admin, name, state.store.rollback)
