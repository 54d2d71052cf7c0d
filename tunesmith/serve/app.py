"""The serving composition root: `create_app(spec)` builds the app, `run_server(spec)` serves it.

Owns: loading the base model and tokenizer once, registering and verifying the adapters named at
start (a mismatch stops the start with the reason), opening the engine `serve: {engine: ...}` names
(embedded or vLLM, see `inference`), wiring engine, store, service, limits,
guardrails and routes, the request-size limit, request ids, the Host check of a server without
auth (so a web page cannot reach it through DNS rebinding), API docs only without auth, and the
lifespan (start the worker; on shutdown finish in-flight requests). Does not own: any request logic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from transformers import PreTrainedTokenizerBase

from tunesmith.config import LOOPBACK_HOSTS, MonitorJudgeSpec, ServeSpec, default_database_url
from tunesmith.models.loading import (
    default_device,
    load_model,
    load_tokenizer,
    resolve_model,
    supports_fast_bf16,
)
from tunesmith.registry.guardrail_store import GuardrailStore
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_store import Caller, ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.adapters import AdapterCache, meta_linear_shapes, verify_adapter
from tunesmith.serve.engine import GenerationEngine
from tunesmith.serve.errors import APIError, RequestId, error_response, install_error_handlers
from tunesmith.serve.guardrails import ServeGuardrails
from tunesmith.serve.inference import InferenceEngine, require_vllm
from tunesmith.serve.limits import AuthFailureLimit, TenantLimits
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.moderation import Moderator
from tunesmith.serve.routes import admin, events, feedback, openai, ops
from tunesmith.serve.service import ServingService
from tunesmith.serve.vllm_engine import open_vllm_engine

if TYPE_CHECKING:
    from tunesmith.monitor.quality import SampledJudge

logger = logging.getLogger(__name__)
RETENTION_ACTOR = "server:retention"  # the audit trail's actor for the automatic purge


def create_app(spec: ServeSpec, registry: Registry | None = None) -> FastAPI:
    """An app serving `spec.model` with its adapters on `spec.engine`; it starts working with the app's lifespan."""
    if spec.engine == "vllm":
        require_vllm()  # before anything loads: no vLLM or no GPU is one clear error, not a traceback
    store = ServingStore(registry or Registry(default_database_url()).connect())
    base_path = resolve_model(spec.model)
    tokenizer = load_tokenizer(base_path)
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    adapters = {}
    for name, source in spec.adapters.items():
        adapter = store.register_source(name, source, tenant=None)
        adapters[adapter.key] = Path(adapter.path)
        logger.info("serving adapter %s from %s", adapter.key, adapter.path)
    metrics = ServeMetrics()
    engine, context_length = ENGINES[spec.engine](spec, base_path, tokenizer, metrics, adapters)
    limits = TenantLimits(spec.tenant_max_concurrent, spec.tenant_tokens_per_minute)
    moderator = Moderator(engine, store, tokenizer)
    guardrails = ServeGuardrails(GuardrailStore(store.registry), spec.guardrails, metrics, moderator.classify)
    service = ServingService(
        engine, store, tokenizer, metrics, context_length=context_length, max_tokens_limit=spec.max_tokens_limit,
        default_max_tokens=spec.default_max_tokens, max_n=spec.max_n, log_requests=spec.log_requests,
        limits=limits, request_timeout_s=spec.request_timeout_s, guardrails=guardrails,
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        tasks = []
        if spec.log_retention is not None:
            tasks.append(asyncio.create_task(_purge(store, spec.log_retention)))
        if spec.monitor_every is not None:
            # the judge is loaded here, so a judge that cannot load stops the start, not the monitor later
            judge = (
                None
                if spec.monitor_judge is None
                else await run_in_threadpool(_sampled_judge, spec.monitor_judge)
            )
            tasks.append(asyncio.create_task(_monitor(store, spec.monitor_every, spec.monitor_window, judge)))
        yield
        for task in tasks:
            task.cancel()
        engine.close()  # uvicorn has let in-flight responses finish; this drains anything still queued

    app = FastAPI(
        title="tunesmith", summary="OpenAI-compatible multi-LoRA server", lifespan=lifespan,
        # with auth on, the API docs would be the one page open to anyone: served only without auth
        docs_url=None if spec.auth else "/docs", redoc_url=None if spec.auth else "/redoc",
        openapi_url=None if spec.auth else "/openapi.json",
    )  # fmt: skip
    app.state.auth = spec.auth
    app.state.require_bias_audit = spec.require_bias_audit
    app.state.auth_failures = AuthFailureLimit(spec.auth_failures_per_minute, window_s=60)
    app.state.health_stall_s = spec.health_stall_s
    app.state.store = store
    app.state.monitor_store = MonitorStore(store.registry)
    app.state.guardrail_store = guardrails.store
    app.state.service = service
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in (openai.router, feedback.router, events.router, admin.router, ops.router):
        app.include_router(router)
    if spec.ui:
        from tunesmith.ui.app import create_ui_app

        console = create_ui_app(store.registry, auth=spec.auth, require_bias_audit=spec.require_bias_audit)
        app.mount("/ui", console)
    app.add_middleware(BodyLimit, max_bytes=spec.max_request_bytes)
    if not spec.auth:  # open only to this machine: refuse other Host names (DNS rebinding)
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=[*LOOPBACK_HOSTS, "[::1]"])
    app.add_middleware(RequestId)  # outermost: every response, refusals included, carries an id
    return app


def _open_embedded(
    spec: ServeSpec, base_path: str, tokenizer: PreTrainedTokenizerBase, metrics: ServeMetrics,
    adapters: dict[str, Path],
) -> tuple[InferenceEngine, int]:  # fmt: skip
    """The embedded engine on this machine's GPU or CPU, `adapters` loaded (refusing to start on a mismatch),
    and the model's context length."""
    device = default_device()
    # bf16 on GPUs that run it natively; fp32 on CPUs. On a CPU with AVX512-BF16/AMX, bf16 makes prefill
    # and 16-row decode steps faster but a lone stream ~15% slower and 8 mixed adapters 0.65x of one
    # (benchmarks/RESULTS.md "Generation throughput", 2026-12-07): not yet a better default there.
    model = load_model(
        base_path,
        torch.bfloat16 if device.startswith("cuda") and supports_fast_bf16(device) else torch.float32,
    )
    model.to(device)  # type: ignore[arg-type]
    model.eval()
    cache = AdapterCache(model, base_path, spec.max_loaded_adapters)
    for key, path in adapters.items():
        cache.ensure(key, path, pinned=set())  # verify now: refuse to start on a mismatch
    engine = GenerationEngine(
        cache,
        tokenizer,
        max_batch_size=spec.max_batch_size,
        max_wait_s=spec.max_wait_ms / 1000,
        metrics=metrics,
        max_queued=spec.max_queued,
        max_queue_wait_s=spec.max_queue_wait_s,
    )
    return engine, int(model.config.max_position_embeddings)


def _open_vllm(
    spec: ServeSpec, base_path: str, tokenizer: PreTrainedTokenizerBase, metrics: ServeMetrics,
    adapters: dict[str, Path],
) -> tuple[InferenceEngine, int]:  # fmt: skip
    """vLLM on this machine's GPU (see `vllm_engine`), `adapters` verified and loaded (refusing to start on a
    mismatch), and the model's context length."""
    from transformers import AutoConfig

    shapes = meta_linear_shapes(base_path)
    for path in adapters.values():  # before vLLM takes minutes to start
        verify_adapter(path, base_path, shapes)
    engine = open_vllm_engine(
        base_path, tokenizer, shapes,
        max_batch_size=spec.max_batch_size,
        max_loaded_adapters=spec.max_loaded_adapters, max_lora_rank=spec.max_lora_rank,
        max_queued=spec.max_queued, max_queue_wait_s=spec.max_queue_wait_s, metrics=metrics,
    )  # fmt: skip
    try:
        for key, path in adapters.items():
            engine.load_adapter(key, path).result()
    except BaseException:
        engine.close(timeout=0)
        raise
    return engine, int(AutoConfig.from_pretrained(base_path).max_position_embeddings)


# `serve: {engine: ...}` → what opens it (a visible table: the name comes from a config file)
ENGINES: dict[
    str,
    Callable[
        [ServeSpec, str, PreTrainedTokenizerBase, ServeMetrics, dict[str, Path]], tuple[InferenceEngine, int]
    ],
] = {"embedded": _open_embedded, "vllm": _open_vllm}


async def _purge(store: ServingStore, older_than_seconds: float) -> None:
    """Apply the request-log retention now and every hour until cancelled."""
    while True:
        counts = await run_in_threadpool(store.purge_requests, older_than_seconds, actor=RETENTION_ACTOR)
        logger.info("request-log retention: %s", counts)
        await asyncio.sleep(3600)


async def _monitor(
    store: ServingStore, every_seconds: float, window: int, judge: SampledJudge | None
) -> None:
    """`tunesmith monitor check` on every deployment, every `every_seconds`, until cancelled; with
    `judge`, the judge scores a sample of each window.

    One deployment that cannot be checked (its adapter's base model gone, say) is logged and skipped:
    it must not stop the others' monitoring or the server.
    """
    from tunesmith.monitor.check import monitor_deployment

    admin = Caller(tenant=None, is_admin=True)
    while True:
        await asyncio.sleep(every_seconds)
        for deployment in await run_in_threadpool(store.list_deployments, admin):
            try:
                report = await run_in_threadpool(
                    monitor_deployment, store.registry, deployment["name"], window, judge=judge
                )
            except Exception:
                logger.exception("monitor: checking deployment %s failed", deployment["name"])
                continue
            for alert in report["alerts"]:
                logger.warning("monitor: %s: %s", deployment["name"], alert["message"])


def _sampled_judge(spec: MonitorJudgeSpec) -> SampledJudge:
    """The background monitor's judge (as `tunesmith monitor check --judge-model` builds it)."""
    from tunesmith.eval.judge import make_judge
    from tunesmith.monitor.quality import SampledJudge

    return SampledJudge(make_judge(spec.model, spec.base_url, spec.api_key_env), spec.criteria, spec.sample)


class BodyLimit:
    """Refuse request bodies over `max_bytes` with a 413, by header or by counting streamed bytes."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = APIError(
            413, f"request body over the limit of {self.max_bytes} bytes", code="request_too_large"
        )
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and int(length) > self.max_bytes:
            await error_response(too_large)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise too_large
            return message

        await self.app(scope, counting_receive, send)


def run_server(spec: ServeSpec) -> None:
    """Serve until interrupted; SIGINT/SIGTERM finish in-flight requests before exiting."""
    import uvicorn

    # one line per request on stderr, its payload JSON (see `service.finish`)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(spec)
    uvicorn.run(app, host=spec.host, port=spec.port, log_level="info")
