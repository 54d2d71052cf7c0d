"""OpenAI-compatible routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`.

Owns: the response and server-sent-event shapes, the variant headers, noticing a client that went
away (its jobs are cancelled, freeing their batch rows), and where guardrails sit in a request: the
prompt is checked before it is tokenized (redacted text is what the model and the log see; a
blocked one is a 400 naming the guard, or the configured refusal), and each answer's text reaches
the client only through its output guard (see `Generation`). Does not own: what a request means
(see `service`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any
from uuid import uuid4

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tunesmith.serve.deps import CallerDep, ServiceDep
from tunesmith.serve.errors import APIError, request_id
from tunesmith.serve.guardrails import ActiveGuard, blocked_error
from tunesmith.serve.jobs import JobEvent
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.schemas import (
    ChatCompletionCreate,
    CompletionCreate,
    ModelListPublic,
    SamplingFields,
    Usage,
)
from tunesmith.serve.service import Generation, ServingService, Target

router = APIRouter(prefix="/v1")

VARIANT_HEADER = "x-tunesmith-variant"
DEPLOYMENT_HEADER = "x-tunesmith-deployment"


@router.get("/models", response_model_exclude_none=True)
async def list_models(caller: CallerDep, service: ServiceDep) -> ModelListPublic:
    """`base`, and the adapters and deployments this key may call."""
    return ModelListPublic(data=await run_in_threadpool(service.list_models, caller))


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionCreate, request: Request, caller: CallerDep, service: ServiceDep
) -> Response:
    target = await run_in_threadpool(service.resolve, caller, body.model, body.user)
    last_user = next(message.text() for message in reversed(body.messages) if message.role == "user")
    active, texts, refusal = await _check_prompt(
        request, service, target, [message.text() for message in body.messages], [last_user], "messages"
    )
    if refusal is not None:
        return _refusal(service, target, body, "chat", refusal, body.n)
    messages = [
        message if text == message.text() else message.model_copy(update={"content": text})
        for message, text in zip(body.messages, texts, strict=True)
    ]
    prompt_ids = await run_in_threadpool(service.chat_prompt, messages)  # off the event loop
    max_tokens = service.max_tokens(body, body.max_completion_tokens or body.max_tokens, len(prompt_ids))
    prompt = {"messages": [message.model_dump(exclude_none=True) for message in messages]}
    generation = service.start(target, [prompt_ids], body, max_tokens, tenant=caller.tenant,
                               request_id=request_id(request))  # fmt: skip
    _guard_output(generation, active, service)
    return await _respond(request, generation, body, "chat", prompt,
                          partial(service.finish, caller=caller, requested_model=body.model, user=body.user))  # fmt: skip


@router.post("/completions", response_model=None)
async def create_completion(
    body: CompletionCreate, request: Request, caller: CallerDep, service: ServiceDep
) -> Response:
    try:
        prompts = body.prompts()
    except ValueError as error:
        raise APIError(400, str(error), param="prompt") from error
    target = await run_in_threadpool(service.resolve, caller, body.model, body.user)
    service.check_choices(body.n, len(prompts))  # before tokenizing anything
    active, prompts, refusal = await _check_prompt(request, service, target, prompts, prompts, "prompt")
    if refusal is not None:
        return _refusal(service, target, body, "completion", refusal, body.n * len(prompts))
    prompt_ids = await run_in_threadpool(lambda: [service.text_prompt(prompt) for prompt in prompts])
    max_tokens = service.max_tokens(body, body.max_tokens, max(len(ids) for ids in prompt_ids), len(prompts))
    generation = service.start(target, prompt_ids, body, max_tokens, tenant=caller.tenant,
                               request_id=request_id(request))  # fmt: skip
    _guard_output(generation, active, service)
    return await _respond(request, generation, body, "completion", {"prompt": prompts},
                          partial(service.finish, caller=caller, requested_model=body.model, user=body.user))  # fmt: skip


async def _check_prompt(
    request: Request,
    service: ServingService,
    target: Target,
    texts: list[str],
    topic_texts: list[str],
    param: str,
) -> tuple[ActiveGuard | None, list[str], str | None]:
    """The guardrails that apply, the prompt texts to use (redacted where asked), and a refusal to send
    instead of an answer (None: answer). A blocked prompt without a configured refusal is a 400."""
    adapter = target.adapter.name if target.adapter is not None else None
    active = await run_in_threadpool(service.guardrails.for_request, target.deployment, adapter)
    if active is None:
        return None, texts, None
    verdict = await service.guardrails.check_prompt(active, texts, topic_texts, request_id(request))
    if verdict.blocked is None:
        return active, verdict.texts, None
    if active.guard.refusal is None:
        raise blocked_error(verdict.blocked, param)
    return active, texts, active.guard.refusal


def _guard_output(generation: Generation, active: ActiveGuard | None, service: ServingService) -> None:
    if active is not None:
        generation.guardrails, generation.guard_target = service.guardrails, active.target
        generation.output_guard = active.guard if active.guard.checks_output() else None


def _refusal(
    service: ServingService, target: Target, body: SamplingFields, endpoint: str, text: str, choices: int
) -> Response:
    """The configured refusal as every choice's answer, finish_reason `content_filter`; nothing generated."""
    response_id = f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{uuid4().hex}"
    service.metrics.requests.labels(endpoint, target.variant, "200").inc()
    if not body.stream:
        payload = _envelope(endpoint, response_id, target, [
            _choice(endpoint, index, text, "content_filter") for index in range(choices)
        ], stream=False)  # fmt: skip
        payload["usage"] = Usage(prompt_tokens=0, completion_tokens=0, total_tokens=0).model_dump()
        return JSONResponse(payload, headers=_headers(target))
    events = []
    for index in range(choices):
        if endpoint == "chat":
            pieces = [_delta_choice(index, {"role": "assistant", "content": text}, None),
                      _delta_choice(index, {}, "content_filter")]  # fmt: skip
        else:
            pieces = [_choice(endpoint, index, text, "content_filter")]
        events += [_sse(_envelope(endpoint, response_id, target, [piece], stream=True)) for piece in pieces]
    return StreamingResponse(iter([*events, "data: [DONE]\n\n"]), media_type="text/event-stream",
                             headers=_headers(target))  # fmt: skip


async def _respond(
    request: Request, generation: Generation, body: SamplingFields, endpoint: str, prompt: dict[str, Any],
    finish: Callable[..., Awaitable[None]],
) -> Response:  # fmt: skip
    response_id = f"{'chatcmpl' if endpoint == 'chat' else 'cmpl'}-{uuid4().hex}"
    record = partial(finish, generation, response_id=response_id, endpoint=endpoint, prompt=prompt)
    headers = _headers(generation.target)
    events = generation.events()
    if body.stream:
        try:  # wait for the first event so a failure (e.g. an adapter that does not fit) is still a 4xx
            first = await anext(events)
        except BaseException:
            generation.close()
            raise
        metrics = request.app.state.metrics
        stream = _stream(events, first, generation, body, endpoint, response_id, record, metrics)
        return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
    watcher = asyncio.create_task(_cancel_on_disconnect(request, generation))
    try:
        async for _ in events:
            pass
    finally:
        watcher.cancel()
        generation.close()
    await record()
    choices = [
        _choice(endpoint, index, text, reason)
        for index, (text, reason) in enumerate(
            zip(generation.outputs, generation.finish_reasons, strict=True)
        )
    ]
    payload = _envelope(endpoint, response_id, generation.target, choices, stream=False)
    payload["usage"] = _usage(generation).model_dump()
    return JSONResponse(payload, headers=headers)


async def _stream(
    events: AsyncIterator[tuple[int, JobEvent]], first: tuple[int, JobEvent], generation: Generation,
    body: SamplingFields, endpoint: str, response_id: str, record: Callable[[], Awaitable[None]], metrics: ServeMetrics,
) -> AsyncIterator[str]:  # fmt: skip
    target = generation.target
    completed = False
    status = "499"  # unless an error says otherwise, a stream that stops early lost its client
    try:
        if endpoint == "chat":
            opening = [
                _delta_choice(index, {"role": "assistant", "content": ""}, None)
                for index in range(len(generation.jobs))
            ]
            yield _sse(_envelope(endpoint, response_id, target, opening, stream=True))  # fmt: skip
        async for index, event in _chain(first, events):
            if event.kind == "delta" and not event.text:
                continue
            reason = event.finish_reason if event.kind == "done" else None
            if endpoint == "chat":
                choice = _delta_choice(index, {"content": event.text} if event.text else {}, reason)
            else:
                choice = _choice(endpoint, index, event.text, reason)
            yield _sse(_envelope(endpoint, response_id, target, [choice], stream=True))
        completed = True
    except APIError as error:  # after the 200 went out: the error is the stream's last event
        status = str(error.status)
        yield _sse({"error": {"message": error.message, "type": error.type, "code": error.code}})
        return
    finally:
        if not completed:  # the client went away (or the job failed, or time ran out): free the batch rows
            # counted first: once the rows are freed, health shows the request gone and its count is there
            metrics.requests.labels(endpoint, target.variant, status).inc()  # 499: client closed request
            generation.close()
    await record()
    if body.stream_options is not None and body.stream_options.include_usage:
        final = _envelope(endpoint, response_id, target, [], stream=True)
        final["usage"] = _usage(generation).model_dump()
        yield _sse(final)
    yield "data: [DONE]\n\n"


async def _chain(
    first: tuple[int, JobEvent], rest: AsyncIterator[tuple[int, JobEvent]]
) -> AsyncIterator[tuple[int, JobEvent]]:
    yield first
    async for item in rest:
        yield item


async def _cancel_on_disconnect(request: Request, generation: Generation) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.25)
    generation.cancel()


def _headers(target: Target) -> dict[str, str]:
    headers = {VARIANT_HEADER: target.variant}
    if target.deployment is not None:
        headers[DEPLOYMENT_HEADER] = target.deployment
    return headers


def _usage(generation: Generation) -> Usage:
    return Usage(
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        total_tokens=generation.prompt_tokens + generation.completion_tokens,
    )


def _envelope(
    endpoint: str, response_id: str, target: Target, choices: list[dict[str, Any]], *, stream: bool
) -> dict[str, Any]:
    kind = {("chat", False): "chat.completion", ("chat", True): "chat.completion.chunk"}
    return {
        "id": response_id,
        "object": kind.get((endpoint, stream), "text_completion"),
        "created": int(time.time()),
        "model": target.variant,
        "choices": choices,
    }


def _choice(endpoint: str, index: int, text: str, reason: str | None) -> dict[str, Any]:
    if endpoint == "chat":
        return {"index": index, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
    return {"index": index, "text": text, "finish_reason": reason, "logprobs": None}


def _delta_choice(index: int, delta: dict[str, Any], reason: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": reason}


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"
