"""What a completion request means: which model answers, the prompt tokens, limits, the log.

Owns: resolving a request's `model` for a caller (`base`, an adapter `name[@version]`, or a
deployment whose variant is chosen per user), turning messages into prompt tokens with the base
model's chat template, checking lengths against the limits, submitting the `n` generation jobs and
collecting their events, and recording the finished request (metrics and the registry log).
Does not own: HTTP shapes (see `routes/`) or decoding (see `engine`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from transformers import PreTrainedTokenizerBase

from tunesmith.registry.serving_records import AdapterVersion, Caller
from tunesmith.registry.serving_store import (
    BASE_MODEL_NAME,
    NotFoundError,
    ServingStore,
    choose_variant,
    parse_model_ref,
)
from tunesmith.serve.engine import EngineClosedError, GenerationEngine
from tunesmith.serve.errors import APIError
from tunesmith.serve.jobs import GenerationJob, JobEvent
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.schemas import ChatMessage, ModelPublic, SamplingFields

request_logger = logging.getLogger("tunesmith.serve.requests")


@dataclass(frozen=True)
class Target:
    """The model that answers a request."""

    variant: str  # `base` or `name@version`: reported in the response's `model` and a header
    adapter: AdapterVersion | None
    deployment: str | None


@dataclass
class Generation:
    """The `n` jobs of one request and the queue their events arrive on, tagged with the choice index."""

    target: Target
    prompt_tokens: int
    jobs: list[GenerationJob]
    queue: asyncio.Queue[tuple[int, JobEvent]]
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    outputs: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    completion_tokens: int = 0

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled = True

    async def events(self) -> AsyncIterator[tuple[int, JobEvent]]:
        """Events until every job is done; raises APIError if a job failed."""
        self.outputs = [""] * len(self.jobs)
        self.finish_reasons = [""] * len(self.jobs)
        remaining = len(self.jobs)
        while remaining:
            index, event = await self.queue.get()
            if event.kind == "error":
                self.cancel()
                assert event.error is not None
                raise APIError(400, str(event.error), code="adapter_unavailable") from event.error
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            if event.kind == "done":
                remaining -= 1
                self.finish_reasons[index] = event.finish_reason or "stop"
                self.completion_tokens += event.completion_tokens
            else:
                self.outputs[index] += event.text
            yield index, event


class ServingService:
    """Request handling shared by the chat and completion routes."""

    def __init__(
        self,
        engine: GenerationEngine,
        store: ServingStore,
        tokenizer: PreTrainedTokenizerBase,
        metrics: ServeMetrics,
        *,
        context_length: int,
        max_tokens_limit: int,
        default_max_tokens: int,
        max_n: int,
        log_requests: bool,
    ) -> None:
        self.engine = engine
        self.store = store
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.context_length = context_length
        self.max_tokens_limit = max_tokens_limit
        self.default_max_tokens = default_max_tokens
        self.max_n = max_n
        self.log_requests = log_requests

    # ------------------------------------------------------------------ what answers

    def resolve(self, caller: Caller, model: str, user: str | None) -> Target:
        """The target for `model`; a 404 for anything the caller may not see (never a 403)."""
        if model == BASE_MODEL_NAME:
            return Target(BASE_MODEL_NAME, None, None)
        deployment = self.store.find_deployment(caller, model)
        if deployment is not None:
            variant = choose_variant(model, user, deployment["variants"])
            target = self._adapter_target(Caller(deployment["tenant"], deployment["tenant"] is None), variant)
            return Target(target.variant, target.adapter, model)
        return self._adapter_target(caller, model)

    def _adapter_target(self, caller: Caller, model: str) -> Target:
        if model == BASE_MODEL_NAME:
            return Target(BASE_MODEL_NAME, None, None)
        try:
            name, version = parse_model_ref(model)
            adapter = self.store.find_adapter(caller, name, version)
        except NotFoundError as error:
            raise APIError(
                404, f"The model '{model}' does not exist or you do not have access to it.", param="model",
                code="model_not_found",
            ) from error  # fmt: skip
        return Target(adapter.key, adapter, None)

    def list_models(self, caller: Caller) -> list[ModelPublic]:
        """`base`, the caller's adapters (latest and each `@version` is callable) and deployments."""
        models = [ModelPublic(id=BASE_MODEL_NAME, owned_by="tunesmith")]
        for adapter in self.store.visible_adapters(caller):
            models.append(
                ModelPublic(id=adapter.name, owned_by=adapter.tenant or "tunesmith", version=adapter.version,
                            kind="adapter")
            )  # fmt: skip
        for deployment in self.store.list_deployments(caller):
            models.append(
                ModelPublic(
                    id=deployment["name"], owned_by=deployment["tenant"] or "tunesmith", kind="deployment"
                )
            )
        return models

    # ------------------------------------------------------------------ prompts and limits

    def chat_prompt(self, messages: list[ChatMessage]) -> list[int]:
        rendered = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.text()} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return list(self.tokenizer(str(rendered), add_special_tokens=False)["input_ids"])

    def text_prompt(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def max_tokens(self, body: SamplingFields, requested: int | None, prompt_tokens: int) -> int:
        """The completion budget, or a 400 naming the limit broken."""
        if body.n > self.max_n:
            raise APIError(400, f"n: at most {self.max_n} choices per request, got {body.n}", param="n")
        if requested is not None and requested > self.max_tokens_limit:
            raise APIError(
                400, f"max_tokens: {requested} is over this server's limit of {self.max_tokens_limit}",
                param="max_tokens", code="max_tokens_too_large",
            )  # fmt: skip
        room = self.context_length - prompt_tokens
        if room <= 0 or (requested is not None and requested > room):
            asked = requested or 1
            raise APIError(
                400, f"This model's maximum context length is {self.context_length} tokens; the prompt has "
                f"{prompt_tokens} tokens and {asked} more were requested. Shorten the messages or lower max_tokens.",
                param="messages", code="context_length_exceeded",
            )  # fmt: skip
        return requested if requested is not None else min(self.default_max_tokens, room)

    # ------------------------------------------------------------------ running

    def start(
        self, target: Target, prompts: list[list[int]], body: SamplingFields, max_tokens: int
    ) -> Generation:
        """Queue `n` jobs per prompt; choice `p * n + i` is prompt p's i-th, with seed `seed + i`."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, JobEvent]] = asyncio.Queue()
        jobs = []
        for index in range(len(prompts) * body.n):
            prompt_ids = prompts[index // body.n]

            def sink(event: JobEvent, index: int = index) -> None:
                loop.call_soon_threadsafe(queue.put_nowait, (index, event))

            jobs.append(
                GenerationJob(
                    prompt_ids=prompt_ids,
                    adapter=target.adapter.key if target.adapter else None,
                    adapter_path=Path(target.adapter.path) if target.adapter else None,
                    max_tokens=max_tokens,
                    temperature=body.temperature,
                    top_p=body.top_p,
                    seed=None if body.seed is None else body.seed + index % body.n,
                    stop=body.stop_list(),
                    sink=sink,
                    label=target.variant,
                )
            )
        try:
            for job in jobs:
                self.engine.submit(job)
        except EngineClosedError as error:
            raise APIError(503, str(error), type_="server_error", code="shutting_down") from error
        return Generation(target, sum(len(prompt) for prompt in prompts), jobs, queue)

    async def finish(
        self, generation: Generation, *, response_id: str, endpoint: str, caller: Caller, requested_model: str,
        user: str | None, prompt: dict[str, Any],
    ) -> None:  # fmt: skip
        """Record a completed request: metrics, one structured log line, and the registry log."""
        latency = time.monotonic() - generation.started
        ttft = None if generation.first_token_at is None else generation.first_token_at - generation.started
        variant = generation.target.variant
        self.metrics.requests.labels(endpoint, variant, "200").inc()
        self.metrics.latency.labels(variant).observe(latency)
        if ttft is not None:
            self.metrics.ttft.labels(variant).observe(ttft)
        self.metrics.prompt_tokens.labels(variant).inc(generation.prompt_tokens)
        self.metrics.completion_tokens.labels(variant).inc(generation.completion_tokens)
        if latency > 0:
            self.metrics.request_tokens_per_second.labels(variant).observe(
                generation.completion_tokens / latency
            )
        fields = {
            "id": response_id, "tenant": caller.tenant, "endpoint": endpoint, "requested_model": requested_model,
            "deployment": generation.target.deployment, "variant": variant, "user": user,
            "prompt_tokens": generation.prompt_tokens, "completion_tokens": generation.completion_tokens,
            "latency_ms": latency * 1000, "ttft_ms": None if ttft is None else ttft * 1000,
        }  # fmt: skip
        request_logger.info(json.dumps({"event": "request", **fields}))
        if self.log_requests:
            await run_in_threadpool(
                self.store.log_request, prompt=prompt, outputs=generation.outputs,
                finish_reasons=generation.finish_reasons, **fields,
            )  # fmt: skip
