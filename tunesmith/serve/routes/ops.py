"""Operations: `GET /health` (liveness and load) and `GET /metrics` (Prometheus text format).

`/health` is open to anyone, so it says only whether the worker makes progress and how loaded it is
(503 once the worker has had work without progress for `health_stall_s`, or has died); which adapters
are loaded is for admins (`/admin/adapters`). `/metrics` names variants and their traffic: it needs an
admin key when auth is on; it also exports the count of stored monitoring alerts, read from the
registry at each scrape (alerts are written by `tunesmith monitor check`, another process).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from tunesmith.serve.deps import AdminDep, MonitorStoreDep, ServiceDep

router = APIRouter()


@router.get("/health", response_model=None)
async def health(request: Request, service: ServiceDep) -> dict[str, Any] | JSONResponse:
    engine = service.engine
    stalled = engine.stalled_for()
    body: dict[str, Any] = {"status": "ok", "queued": engine.queued, "running": engine.running}
    if stalled > request.app.state.health_stall_s:
        body["status"] = "stalled"
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    return body


@router.get("/metrics")
async def metrics(request: Request, caller: AdminDep, monitor: MonitorStoreDep) -> Response:
    for (deployment, kind), count in (await run_in_threadpool(monitor.alert_counts)).items():
        request.app.state.metrics.monitor_alerts.labels(deployment, kind).set(count)
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
