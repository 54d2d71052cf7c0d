"""What a completion request means: which model answers, the prompt tokens, limits, the log.

Owns: resolving a request's `model` for a caller (`base`, an adapter `name[@version]`, or a
deployment whose variant is chosen per user), turning messages into prompt tokens with the base
model's chat template (refusing chat special tokens inside message text), checking lengths against
the limits, admitting the request under its tenant's limits, submitting the generation jobs (a full
queue is a 503 with `Retry-After`) and collecting their events within the request timeout (each
answer's text through the request's output guard, see `audit.guardrails.OutputScanner`, and where
asked the classifier adapter), turning
a job's failure into a client-safe error, and recording the finished request (metrics and the
registry log; a log that cannot be written is counted and logged, never the client's problem).
Does not own: HTTP shapes (see `routes/`) or decoding (see `engine`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from transformers import PreTrainedTokenizerBase

from tunesmith.audit.guardrails import Guard, GuardEvent, OutputScanner
from tunesmith.registry.serving_records import AdapterVersion, Caller
from tunesmith.registry.serving_store import (
    BASE_MODEL_NAME,
    NotFoundError,
    ServingStore,
    choose_variant,
    parse_model_ref,
)
from tunesmith.serve.errors import APIError, internal_error
from tunesmith.serve.guardrails import ServeGuardrails
from tunesmith.serve.inference import EngineBusyError, EngineClosedError, InferenceEngine
from tunesmith.serve.jobs import AdapterLoadError, GenerationJob, JobEvent, QueueTimeoutError, RowError
from tunesmith.serve.limits import LimitError, TenantLimits, TooManyTokensError
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.schemas import ChatMessage, ModelPublic, SamplingFields

request_logger = logging.getLogger("tunesmith.serve.requests")
logger = logging.getLogger(__name__)


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
    request_id: str
    timeout_s: float  # the request's last event must come within this many seconds of its start
    release: Callable[[int], None]  # frees the tenant's slot; takes the tokens used
    metrics: ServeMetrics
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    outputs: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    output_guard: Guard | None = None  # checks each choice's text before the client sees it
    guard_target: str | None = None  # whose guardrails those are (named in the guardrail log)
    guardrails: ServeGuardrails | None = None  # records the output guard's actions when this closes
    scanners: dict[int, OutputScanner] = field(default_factory=dict)

    released: bool = False

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled = True

    def close(self) -> None:
        """Cancel what is left and free the tenant's slot (once; safe to call again)."""
        self.cancel()
        if not self.released:
            self.released = True
            self.release(self.prompt_tokens + self.completion_tokens)
            if self.guardrails is not None and self.guard_target is not None:
                self.guardrails.record(self.request_id, self.guard_target, self.guard_events())

    async def events(self) -> AsyncIterator[tuple[int, JobEvent]]:
        """Events until every job is done; raises APIError if a job failed or time ran out.

        Whichever way it ends (the client's iteration stopped included), the jobs left are cancelled,
        so their rows leave the batch (or the queue) at the worker's next step.
        """
        self.outputs = [""] * len(self.jobs)
        self.finish_reasons = [""] * len(self.jobs)
        remaining = len(self.jobs)
        try:
            while remaining:
                try:
                    async with asyncio.timeout(self.started + self.timeout_s - time.monotonic()):
                        index, event = await self.queue.get()
                except TimeoutError:
                    logger.warning("request %s timed out after %g s", self.request_id, self.timeout_s)
                    self.metrics.limits_hit.labels("request_timeout").inc()
                    raise APIError(
                        503, f"the request took longer than this server's limit of {self.timeout_s:g} s and was "
                        "stopped; try again later or ask for fewer tokens", type_="server_error",
                        code="request_timeout", headers={"Retry-After": "5"},
                    ) from None  # fmt: skip
                if event.kind == "error":
                    assert event.error is not None
                    raise _job_error(event.error, self.request_id) from None
                for guarded in await self._classified(index, self._guarded(index, event)):
                    remaining -= self._take(index, guarded)
                    yield index, guarded
        finally:
            self.close()

    def _guarded(self, index: int, event: JobEvent) -> list[JobEvent]:
        """The event as the client may see it: text the output guard has decided on (see `audit.guardrails`).

        A choice the guard stops is cancelled; its end (finish_reason `content_filter` or `length`)
        comes when its job has left the batch.
        """
        if self.output_guard is None:
            return [event]
        scanner = self.scanners.setdefault(index, OutputScanner(self.output_guard))
        if event.kind == "delta":
            text = scanner.feed(event.text)
            if scanner.stopped is not None:
                self.jobs[index].cancelled = True
            return [JobEvent("delta", text)]
        tail = scanner.finish()
        done = JobEvent("done", finish_reason=scanner.stopped or event.finish_reason,
                        completion_tokens=event.completion_tokens)  # fmt: skip
        return [JobEvent("delta", tail), done] if tail else [done]

    async def _classified(self, index: int, events: list[JobEvent]) -> list[JobEvent]:
        """`events`, or, where they end an answer the classifier adapter blocks, only its end."""
        classifier = self.output_guard.classifier if self.output_guard is not None else None
        if (
            classifier is None
            or not classifier.answers
            or events[-1].kind != "done"
            or self.guardrails is None
        ):
            return events
        if events[-1].finish_reason == "cancelled":  # its client went away
            return events
        answer = self.outputs[index] + "".join(event.text for event in events)
        blocked = await self.guardrails.classified(classifier, answer, "output")
        if blocked is None:
            return events
        self.scanners[index].events.append(blocked)
        return [
            JobEvent("done", finish_reason="content_filter", completion_tokens=events[-1].completion_tokens)
        ]

    def guard_events(self) -> list[GuardEvent]:
        """What the output guard did, choice by choice."""
        return [event for index in sorted(self.scanners) for event in self.scanners[index].events]

    def _take(self, index: int, event: JobEvent) -> int:
        """Record an event; 1 if it ended its job."""
        if self.first_token_at is None:
            self.first_token_at = time.monotonic()
        if event.kind == "done":
            self.finish_reasons[index] = event.finish_reason or "stop"
            self.completion_tokens += event.completion_tokens
            return 1
        self.outputs[index] += event.text
        return 0


def _job_error(error: Exception, request_id: str) -> APIError:
    """What the client hears of a failed job: its own fault named, anything else only by request id."""
    if isinstance(error, AdapterLoadError):
        return APIError(400, str(error), param="model", code="adapter_unavailable")
    if isinstance(error, QueueTimeoutError):
        return APIError(
            503, "the server is busy: the request waited too long for a free row; try again later",
            type_="server_error", code="queue_timeout", headers={"Retry-After": "5"},
        )  # fmt: skip
    logger.error("request %s failed: %s", request_id, error, exc_info=error)
    if isinstance(error, RowError):  # this request's row alone failed
        return internal_error(request_id, "the generation failed")
    return APIError(  # the batch failed (e.g. out of memory): every request in it, none's fault
        503, f"the generation engine failed; try again later (request id {request_id})", type_="server_error",
        code="engine_error", headers={"Retry-After": "5"},
    )  # fmt: skip


class ServingService:
    """Request handling shared by the chat and completion routes."""

    def __init__(
        self,
        engine: InferenceEngine,
        store: ServingStore,
        tokenizer: PreTrainedTokenizerBase,
        metrics: ServeMetrics,
        *,
        context_length: int,
        max_tokens_limit: int,
        default_max_tokens: int,
        max_n: int,
        log_requests: bool,
        limits: TenantLimits,
        request_timeout_s: float,
        guardrails: ServeGuardrails,
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
        self.limits = limits
        self.request_timeout_s = request_timeout_s
        self.guardrails = guardrails
        self.special_tokens = sorted(
            {*tokenizer.all_special_tokens, *(str(t) for t in tokenizer.added_tokens_decoder.values())}
        )

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
        """The prompt tokens of `messages`; a 400 if a message's text holds a special token.

        The rendered prompt is tokenized with special-token parsing (the template's own markers must
        become their tokens), so `<|im_start|>system` inside a user's text would forge a turn.
        """
        for index, message in enumerate(messages):
            text = message.text()
            for token in self.special_tokens:
                if token and token in text:
                    raise APIError(
                        400, f"messages[{index}].content: holds the special token {token!r}, which only the "
                        "chat template may write", param=f"messages.{index}.content", code="special_token",
                    )  # fmt: skip
        rendered = self.tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.text()} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return list(self.tokenizer(str(rendered), add_special_tokens=False)["input_ids"])

    def text_prompt(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    def check_choices(self, n: int, prompts: int) -> None:
        """A 400 unless `prompts × n` choices fit the per-request limit (check before tokenizing)."""
        if n * prompts > self.max_n:
            raise APIError(
                400, f"n: at most {self.max_n} choices per request (prompts × n), got {prompts} × {n}",
                param="n",
            )  # fmt: skip

    def max_tokens(
        self, body: SamplingFields, requested: int | None, prompt_tokens: int, prompts: int = 1
    ) -> int:
        """The completion budget, or a 400 naming the limit broken."""
        self.check_choices(body.n, prompts)
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
        self, target: Target, prompts: list[list[int]], body: SamplingFields, max_tokens: int, *,
        tenant: str | None, request_id: str,
    ) -> Generation:  # fmt: skip
        """Queue `n` jobs per prompt; choice `p * n + i` is prompt p's i-th, with seed `seed + i`.

        The tenant's limits admit the request first (a 429 with `Retry-After` if not, a 400 if the
        request could never fit its token rate); a full queue is a 503 with `Retry-After`.
        """
        prompt_tokens = sum(len(prompt) for prompt in prompts)
        reserved = prompt_tokens + len(prompts) * body.n * max_tokens
        tenant_key = tenant or "-"
        try:
            self.limits.admit(tenant_key, reserved)
        except LimitError as error:
            self.metrics.limits_hit.labels(error.limit).inc()
            raise APIError(
                429, error.message, type_="rate_limit_error", code="rate_limit_exceeded",
                headers={"Retry-After": str(error.retry_after)},
            ) from None  # fmt: skip
        except TooManyTokensError as error:
            self.metrics.limits_hit.labels("tenant_tokens").inc()
            raise APIError(400, str(error), param="max_tokens", code="tokens_over_rate_limit") from None

        def release(used: int) -> None:
            self.limits.release(tenant_key, reserved - used)

        try:
            return self._submit(target, prompts, body, max_tokens, tenant_key, request_id, release)
        except BaseException:
            release(0)
            raise

    def _submit(
        self, target: Target, prompts: list[list[int]], body: SamplingFields, max_tokens: int, tenant: str,
        request_id: str, release: Callable[[int], None],
    ) -> Generation:  # fmt: skip
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
                    tenant=tenant,
                    request_id=request_id,
                )
            )
        try:
            self.engine.submit_all(jobs)
        except EngineClosedError as error:
            raise APIError(503, str(error), type_="server_error", code="shutting_down") from error
        except EngineBusyError as error:
            self.metrics.limits_hit.labels("queue_full").inc()
            raise APIError(
                503, f"{error}; try again later", type_="server_error", code="server_busy",
                headers={"Retry-After": "2"},
            ) from None  # fmt: skip
        return Generation(
            target, sum(len(prompt) for prompt in prompts), jobs, queue, request_id, self.request_timeout_s,
            release, self.metrics,
        )  # fmt: skip

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
        if not self.log_requests:
            return
        try:
            await run_in_threadpool(
                self.store.log_request, prompt=prompt, outputs=generation.outputs,
                finish_reasons=generation.finish_reasons, **fields,
            )  # fmt: skip
        except Exception:  # the client has its answer; a locked or broken registry must not take it away
            self.metrics.request_log_failures.inc()
            logger.exception("could not log response %s (request id %s)", response_id, generation.request_id)
