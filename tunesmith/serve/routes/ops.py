"""Operations: `GET /health` (liveness and load) and `GET /metrics` (Prometheus text format)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from tunesmith.serve.deps import ServiceDep

router = APIRouter()


@router.get("/health")
async def health(service: ServiceDep) -> dict[str, Any]:
    engine = service.engine
    return {
        "status": "ok",
        "queued": engine.queued,
        "running": engine.running,
        "loaded_adapters": engine.adapters.loaded,
    }


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
