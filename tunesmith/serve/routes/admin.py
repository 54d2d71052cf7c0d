"""Admin routes (admin keys only): load/unload adapters, deployments and their A/B weights, guardrails,
feedback.

Owns: the HTTP face of the same operations `tunesmith adapters`, `tunesmith deploy` and `tunesmith
guardrails` run on the registry. Does not own: the operations (see `serving_store`, `adapters`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from tunesmith.audit.trail import key_actor
from tunesmith.config import ConfigError, GuardrailSpec
from tunesmith.registry.bias_gate import BiasAuditRequired
from tunesmith.registry.serving_records import Deployment, DeploymentDetail, VariantWeight
from tunesmith.registry.serving_store import NotFoundError
from tunesmith.serve.deps import AdminDep, ServiceDep, StoreDep
from tunesmith.serve.errors import APIError
from tunesmith.serve.schemas import AdapterLoad, DeploymentCreate, PromoteBody, Variant, WeightsUpdate

router = APIRouter(prefix="/admin")


@router.get("/adapters")
async def list_adapters(caller: AdminDep, service: ServiceDep) -> dict[str, Any]:
    registered = await run_in_threadpool(service.store.visible_adapters, caller)
    engine = service.engine
    return {
        "loaded": engine.loaded_adapters(),
        "capacity": engine.adapter_capacity,
        "registered": [{"name": a.name, "version": a.version, "tenant": a.tenant} for a in registered],
    }


@router.post("/adapters/load")
async def load_adapter(body: AdapterLoad, caller: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Load an adapter now (verifying it fits the base); a 400 says why it does not."""
    target = await run_in_threadpool(service.resolve, caller, body.model, None)
    if target.adapter is None:
        raise APIError(400, "the base model is always loaded", param="model")
    key, path = target.adapter.key, Path(target.adapter.path)
    try:
        await asyncio.wrap_future(service.engine.load_adapter(key, path))
    except ValueError as error:
        raise APIError(400, str(error), param="model", code="adapter_mismatch") from error
    after = {"path": str(path), "loaded": service.engine.loaded_adapters()}
    await run_in_threadpool(
        service.store.record_action, key_actor(caller.key_id), "adapter.load", key, None, after
    )
    return {"loaded": service.engine.loaded_adapters()}


@router.post("/adapters/unload")
async def unload_adapter(body: AdapterLoad, caller: AdminDep, service: ServiceDep) -> dict[str, Any]:
    target = await run_in_threadpool(service.resolve, caller, body.model, None)
    key = target.variant
    if not await asyncio.wrap_future(service.engine.unload_adapter(key)):
        raise APIError(404, f"adapter {key} is not loaded", param="model")
    after = {"loaded": service.engine.loaded_adapters()}
    await run_in_threadpool(
        service.store.record_action, key_actor(caller.key_id), "adapter.unload", key, None, after
    )
    return {"loaded": service.engine.loaded_adapters()}


@router.get("/deployments")
async def list_deployments(caller: AdminDep, store: StoreDep) -> dict[str, list[Deployment]]:
    return {"data": await run_in_threadpool(store.list_deployments, caller)}


@router.post("/deployments", status_code=201)
async def create_deployment(body: DeploymentCreate, caller: AdminDep, store: StoreDep) -> DeploymentDetail:
    actor = key_actor(caller.key_id)
    await _call(store.create_deployment, body.name, _weights(body.variants), tenant=body.tenant, actor=actor)
    return await get_deployment(body.name, caller, store)


@router.get("/deployments/{name}")
async def get_deployment(name: str, caller: AdminDep, store: StoreDep) -> DeploymentDetail:
    deployment = await run_in_threadpool(store.find_deployment, caller, name)
    if deployment is None:
        raise APIError(404, f"no deployment named {name}", code="deployment_not_found")
    return deployment


@router.put("/deployments/{name}/weights")
async def set_weights(
    name: str, body: WeightsUpdate, request: Request, caller: AdminDep, store: StoreDep
) -> DeploymentDetail:
    # the request's flag, or the server's `serve: {require_bias_audit: true}` whatever the request says
    required = body.require_bias_audit or request.app.state.require_bias_audit
    await _call(store.set_weights, name, _weights(body.variants), require_bias_audit=required,
                actor=key_actor(caller.key_id))  # fmt: skip
    return await get_deployment(name, caller, store)


@router.post("/deployments/{name}/promote")
async def promote(
    name: str, body: PromoteBody, request: Request, caller: AdminDep, store: StoreDep
) -> DeploymentDetail:
    # the request's flag, or the server's `serve: {require_bias_audit: true}` whatever the request says
    required = body.require_bias_audit or request.app.state.require_bias_audit
    await _call(store.promote, name, body.model, require_bias_audit=required, actor=key_actor(caller.key_id))
    return await get_deployment(name, caller, store)


@router.post("/deployments/{name}/rollback")
async def rollback(name: str, caller: AdminDep, store: StoreDep) -> DeploymentDetail:
    await _call(store.rollback, name, actor=key_actor(caller.key_id))
    return await get_deployment(name, caller, store)


@router.get("/feedback")
async def list_feedback(caller: AdminDep, store: StoreDep, response_id: str | None = None) -> dict[str, Any]:
    return {"data": await run_in_threadpool(store.list_feedback, response_id)}


@router.get("/requests/{response_id}")
async def get_request(response_id: str, caller: AdminDep, store: StoreDep) -> dict[str, Any]:
    record = await run_in_threadpool(store.get_request, caller, response_id)
    if record is None:
        raise APIError(404, f"no logged response with id {response_id}", code="response_not_found")
    return record


@router.get("/guardrails")
async def list_guardrails(caller: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Every target with guardrails: stored ones (set by admins) and the config file's."""
    stored = await run_in_threadpool(service.guardrails.store.list_targets)
    return {"stored": stored, "configured": sorted(service.guardrails.configured)}


@router.get("/guardrails/{target}")
async def get_guardrails(target: str, caller: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """The guardrails in force for `target`: stored, else from the config file."""
    stored = await run_in_threadpool(service.guardrails.store.get, target)
    if stored is not None:
        return {"target": target, "source": "stored", "spec": stored}
    if target in service.guardrails.configured:
        spec = GuardrailSpec.model_validate_json(service.guardrails.configured[target])
        return {"target": target, "source": "config", "spec": spec.model_dump(mode="json")}
    raise APIError(404, f"{target} has no guardrails", code="guardrails_not_found")


@router.put("/guardrails/{target}")
async def set_guardrails(
    target: str, body: GuardrailSpec, caller: AdminDep, service: ServiceDep
) -> dict[str, Any]:
    """Store `target`'s guardrails; the next request to it uses them."""
    spec = await _call(service.guardrails.store.set, target, body, actor=key_actor(caller.key_id))
    return {"target": target, "source": "stored", "spec": spec}


@router.delete("/guardrails/{target}")
async def clear_guardrails(target: str, caller: AdminDep, service: ServiceDep) -> dict[str, Any]:
    """Remove `target`'s stored guardrails (the config file's, if any, apply again)."""
    await _call(service.guardrails.store.clear, target, actor=key_actor(caller.key_id))
    return {"target": target, "cleared": True}


@router.get("/guardrail-events")
async def list_guardrail_events(
    caller: AdminDep, service: ServiceDep, target: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """The latest guardrail actions, newest first (request id, guard, action, reason)."""
    events = await run_in_threadpool(service.guardrails.store.list_events, target, min(max(limit, 1), 1000))
    return {"data": events}


def _weights(variants: list[Variant]) -> list[VariantWeight]:
    return [{"model": variant.model, "weight": variant.weight} for variant in variants]


async def _call(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a store change; its user errors become 400 (bad value) or 404 (no such name)."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except NotFoundError as error:
        raise APIError(404, str(error), code="not_found") from error
    except BiasAuditRequired as error:
        raise APIError(409, str(error), code="bias_audit_required") from error
    except ConfigError as error:
        raise APIError(400, str(error), code="invalid_value") from error
