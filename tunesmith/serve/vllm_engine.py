"""vLLM as the generation engine on GPUs: `VllmEngine` keeps the `InferenceEngine` contract over vLLM's AsyncLLM.

Owns: starting vLLM's
engine (`open_vllm_engine`) on its own thread and event loop, so jobs arrive from any thread as they do
at the embedded engine; turning a job into vLLM's sampling settings and LoRA request (a tunesmith
adapter key ↔ a stable LoRA int id, the adapter verified against the base as the embedded engine
verifies it before vLLM sees it); streaming the text vLLM returns (cumulative) to the job's sink as
deltas, holding back a partial character or stop string as the embedded engine does; cancelling a job
whose client left and failing a job queued longer than `max_queue_wait_s`; scoring labels from prompt
log-probabilities (the classifier guardrail). vLLM owns the batching, the KV cache (paged, prefix
cached), the LoRA kernels and scheduling; it schedules first come, first served, so tenants do not take
turns as at the embedded engine (their limits, see `limits`, still hold).

Does not own: requests, keys, tenants, deployments, feedback, the request log or guardrails (see
`service`, unchanged whichever engine runs). vLLM is imported only here and only when this engine
starts, so tunesmith imports without it; the pure pieces (`sampling_kwargs`, `DeltaStream`,
`AdapterIds`, `completion_tokens`, `label_prompts`, `label_logprob`) are plain functions, tested without vLLM.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from transformers import PreTrainedTokenizerBase

from tunesmith.eval.classify import label_continuations
from tunesmith.serve.adapters import AdapterMismatchError, verify_adapter
from tunesmith.serve.inference import EngineBusyError, EngineClosedError, require_vllm
from tunesmith.serve.jobs import (
    AdapterLoadError,
    GenerationJob,
    JobEvent,
    QueueTimeoutError,
    RowError,
    held_back,
)
from tunesmith.serve.metrics import ServeMetrics

logger = logging.getLogger(__name__)
_WATCH_S = 0.1  # how often cancelled and expired jobs are looked for
T = TypeVar("T")


# ---------------------------------------------------------------------- pure pieces


def sampling_kwargs(job: GenerationJob) -> dict[str, Any]:
    """vLLM `SamplingParams` arguments for `job`: its limit, sampling, seed and stop strings.

    Temperature 0 is greedy in both engines; the stop strings are cut from the text (not sent), and
    special tokens are left out of it, as the embedded engine decodes.
    """
    return {
        "n": 1,
        "max_tokens": job.max_tokens,
        "temperature": job.temperature,
        "top_p": job.top_p,
        "seed": job.seed,
        "stop": list(job.stop),
        "skip_special_tokens": True,
    }


@dataclass
class DeltaStream:
    """Turns vLLM's cumulative text into the deltas a sink hears, never sending what may still change."""

    stop: list[str]
    sent: int = 0  # characters already sent

    def delta(self, text: str, finished: bool) -> str:
        """What of `text` is new and safe to send (all of it once `finished`)."""
        safe = len(text) if finished else len(text) - held_back(text, self.stop)
        if safe <= self.sent:
            return ""
        piece = text[self.sent : safe]
        self.sent = safe
        return piece


class AdapterIds:
    """tunesmith adapter keys (`name@version`) ↔ vLLM LoRA int ids: 1, 2, ... in first-use order.

    vLLM caches adapters by id, so a key keeps its id for the server's life (a key's files never change:
    a new adapter is a new version, so a new key).
    """

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}

    def id_for(self, key: str) -> int:
        return self._ids.setdefault(key, len(self._ids) + 1)


def completion_tokens(token_ids: Sequence[int], eos: set[int]) -> int:
    """Tokens generated, a final end-of-sequence token not counted (as the embedded engine counts)."""
    return len(token_ids) - (1 if token_ids and token_ids[-1] in eos else 0)


def label_logprob(
    prompt_logprobs: Sequence[Mapping[int, float] | None], label_ids: list[int], start: int
) -> float:
    """A label's summed log-probability from vLLM's prompt log-probabilities of `prompt + label`.

    Args:
        prompt_logprobs: Per position of the whole prompt, the log-probabilities vLLM returned (the token
            at that position among them; None at position 0).
        label_ids: The label's tokens, which start at position `start`.
        start: The length of the prompt before the label.
    """
    total = 0.0
    for offset, token in enumerate(label_ids):
        position = prompt_logprobs[start + offset]
        assert position is not None, "position 0 has no log-probability: the prompt cannot be empty"
        total += position[token]
    return total


def label_prompts(
    tokenizer: PreTrainedTokenizerBase, prompt: str, labels: Sequence[str]
) -> tuple[list[int], list[list[int]]]:
    """The rendered `prompt`'s tokens and each label's (as `eval.classify.score_labels` tokenizes them)."""
    prompt_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    return prompt_ids, label_continuations(tokenizer, labels)


def adapter_error(key: str, path: Path, base_path: str, error: Exception) -> AdapterLoadError:
    """The client's reason an adapter cannot load, the server's paths replaced by names (as `engine`)."""
    reason = str(error).replace(str(path), key).replace(base_path, "the served base model")
    return AdapterLoadError(f"adapter {key} cannot be served: {reason}")


# ---------------------------------------------------------------------- the engine


def open_vllm_engine(
    base_path: str,
    tokenizer: PreTrainedTokenizerBase,
    shapes: dict[str, tuple[int, int]],
    *,
    max_batch_size: int,
    max_loaded_adapters: int,
    max_lora_rank: int,
    max_queued: int,
    max_queue_wait_s: float | None,
    metrics: ServeMetrics,
) -> VllmEngine:
    """Start vLLM on `base_path` (it loads the weights onto the GPU: minutes for a large model).

    Args:
        base_path: The resolved base model folder.
        tokenizer: The base model's tokenizer (for end-of-sequence ids and label tokens; prompts arrive
            as token ids rendered by `service`).
        shapes: `adapters.linear_shapes` of the base, to verify adapters before vLLM loads them.
        max_batch_size: vLLM's `max_num_seqs`.
        max_loaded_adapters: vLLM's `max_loras` and `max_cpu_loras`.
        max_lora_rank: vLLM's `max_lora_rank`.
        max_queued: Most jobs waiting for their first token before submissions get `EngineBusyError`.
        max_queue_wait_s: A job with no token after this long fails with `QueueTimeoutError`.
        metrics: The server's metrics (the adapter-load counter).
    """
    require_vllm()
    from vllm import AsyncEngineArgs, AsyncLLMEngine

    args = AsyncEngineArgs(
        # dtype auto: vLLM's choice for the GPU (a float32 checkpoint runs in 16 bits), made in its own
        # process, so that this one never initialises CUDA (vLLM would then have to spawn, not fork)
        model=base_path, dtype="auto", enable_lora=True, max_loras=max_loaded_adapters,
        max_cpu_loras=max_loaded_adapters, max_lora_rank=max_lora_rank, max_num_seqs=max_batch_size,
        disable_log_stats=True,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="tunesmith-vllm", daemon=True)
    thread.start()

    async def build() -> Any:  # on the loop, so that vLLM's output handler runs on it
        return AsyncLLMEngine.from_engine_args(args)

    llm = asyncio.run_coroutine_threadsafe(build(), loop).result()
    eos = eos_ids(tokenizer, base_path)
    return VllmEngine(llm, loop, thread, tokenizer, eos, base_path, shapes, max_loaded_adapters, max_queued,
                      max_queue_wait_s, metrics)  # fmt: skip


def eos_ids(tokenizer: PreTrainedTokenizerBase, base_path: str) -> set[int]:
    """End-of-sequence ids: the tokenizer's and the generation config's (as the embedded engine stops)."""
    from transformers import GenerationConfig

    try:
        eos = GenerationConfig.from_pretrained(base_path).eos_token_id
    except OSError:  # no generation_config.json
        eos = None
    return {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}


class VllmEngine:
    """Jobs from any thread, generated by vLLM on this engine's event loop thread."""

    def __init__(
        self, llm: Any, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
        tokenizer: PreTrainedTokenizerBase, eos: set[int], base_path: str, shapes: dict[str, tuple[int, int]],
        capacity: int, max_queued: int, max_queue_wait_s: float | None, metrics: ServeMetrics,
    ) -> None:  # fmt: skip
        self.llm = llm  # vLLM's AsyncLLM (typed Any: vLLM is an optional dependency)
        self.loop = loop
        self.thread = thread
        self.tokenizer = tokenizer
        self.eos = eos
        self.base_path = base_path
        self.shapes = shapes
        self.capacity = capacity
        self.max_queued = max_queued
        self.max_queue_wait_s = max_queue_wait_s
        self.metrics = metrics
        self.ids = AdapterIds()
        self.heartbeat = time.monotonic()  # the last output from vLLM (or the last idle moment)
        self._added: OrderedDict[str, Path] = OrderedDict()  # adapters handed to vLLM, least recent first
        self._adding = asyncio.Lock()
        self._tasks: dict[GenerationJob, asyncio.Task[None]] = {}  # jobs generating (loop thread only)
        self._waiting: set[GenerationJob] = set()  # those without a first token yet
        self._lock = threading.Lock()  # guards the counts other threads read and the closing flag
        self._closing = False
        self._watcher: Future[None] | None = None

    # ------------------------------------------------------------------ any thread

    def start(self) -> None:
        self._watcher = asyncio.run_coroutine_threadsafe(self._watch(), self.loop)

    def submit_all(self, jobs: list[GenerationJob]) -> None:
        with self._lock:
            if self._closing:
                raise EngineClosedError("the server is shutting down")
            if len(self._waiting) + len(jobs) > self.max_queued:
                raise EngineBusyError(f"the server is busy ({len(self._waiting)} generations queued)")
            self._waiting.update(jobs)
            self.metrics.queued.set(len(self._waiting))
        for job in jobs:
            self.loop.call_soon_threadsafe(self._begin, job)

    def stalled_for(self) -> float:
        if not self.thread.is_alive() or self.llm.errored:
            return 0.0 if self._closing else float("inf")
        if not self._tasks:
            return 0.0
        return time.monotonic() - self.heartbeat

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._tasks) - len(self._waiting)

    @property
    def adapter_capacity(self) -> int:
        return self.capacity

    def loaded_adapters(self) -> list[str]:
        return list(self._added)[-self.capacity :]

    def load_adapter(self, key: str, path: Path) -> Future[None]:
        return self._call(self._add(key, path))

    def unload_adapter(self, key: str) -> Future[bool]:
        return self._call(self._remove(key))

    def score_labels(self, key: str, path: Path, prompt: str, labels: Sequence[str]) -> Future[list[float]]:
        return self._call(self._score(key, path, prompt, labels))

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, let the running ones finish (within `timeout`), shut vLLM down."""
        with self._lock:
            self._closing = True
        deadline = None if timeout is None else time.monotonic() + timeout
        while (self._tasks or self._waiting) and (deadline is None or time.monotonic() < deadline):
            time.sleep(0.05)
        if self._watcher is not None:
            self._watcher.cancel()
        self.llm.shutdown()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    # ------------------------------------------------------------------ the loop thread

    def _begin(self, job: GenerationJob) -> None:
        self._tasks[job] = self.loop.create_task(self._generate(job))

    async def _generate(self, job: GenerationJob) -> None:
        """Stream `job`'s text to its sink; its end or its own error, whatever happens."""
        from vllm import SamplingParams

        stream, produced = DeltaStream(job.stop), 0
        try:
            lora = await self._lora(job)
            params = SamplingParams(**sampling_kwargs(job))
            prompt = {"prompt_token_ids": job.prompt_ids}
            async for output in self.llm.generate(
                prompt, params, f"{job.request_id}-{id(job)}", lora_request=lora
            ):
                self.heartbeat = time.monotonic()
                self._started(job)
                choice = output.outputs[0]
                produced = completion_tokens(choice.token_ids, self.eos)
                text = stream.delta(choice.text, output.finished)
                if text:
                    job.sink(JobEvent("delta", text))
                if output.finished:
                    reason = "length" if choice.finish_reason == "length" else "stop"
                    job.sink(JobEvent("done", finish_reason=reason, completion_tokens=produced))
        except asyncio.CancelledError:  # the watcher: its client left (vLLM aborts the request)
            job.sink(JobEvent("done", finish_reason="cancelled", completion_tokens=produced))
        except AdapterLoadError as error:
            job.sink(JobEvent("error", error=error))
        except Exception as error:
            logger.exception("vLLM failed request %s", job.request_id)
            failure = RuntimeError("the vLLM engine died") if self.llm.errored else RowError(str(error))
            job.sink(JobEvent("error", error=failure))
        finally:
            self._started(job)
            del self._tasks[job]

    def _started(self, job: GenerationJob) -> None:
        if job in self._waiting:
            with self._lock:
                self._waiting.discard(job)
                self.metrics.queued.set(len(self._waiting))

    async def _watch(self) -> None:
        """Cancel jobs whose clients left, and fail jobs that waited too long for their first token."""
        while True:
            await asyncio.sleep(_WATCH_S)
            if not self._tasks:
                self.heartbeat = time.monotonic()
            now = time.monotonic()
            for job, task in list(self._tasks.items()):
                if job.cancelled:
                    task.cancel()
                elif (
                    self.max_queue_wait_s is not None
                    and job in self._waiting
                    and now - job.enqueued_at > self.max_queue_wait_s
                ):
                    self.metrics.limits_hit.labels("queue_timeout").inc()
                    job.sink(
                        JobEvent("error", error=QueueTimeoutError("the request waited too long in the queue"))
                    )
                    job.cancelled = True  # its sink has heard; the cancellation's "done" goes unread
                    task.cancel()

    async def _lora(self, job: GenerationJob) -> Any:
        """vLLM's LoRA request for `job` (None: the base), the adapter verified and added on first use."""
        if job.adapter is None:
            return None
        assert job.adapter_path is not None
        if job.adapter in self._added:
            self._added.move_to_end(job.adapter)
        else:
            try:
                await self._add(job.adapter, job.adapter_path)
            except ValueError as error:  # a bad adapter fails its own requests, not the engine
                logger.warning("cannot load adapter %s: %s", job.adapter, error)
                raise adapter_error(job.adapter, job.adapter_path, self.base_path, error) from None
        return self._request(job.adapter, job.adapter_path)

    def _request(self, key: str, path: Path) -> Any:
        from vllm.lora.request import LoRARequest

        return LoRARequest(key, self.ids.id_for(key), str(path))

    async def _add(self, key: str, path: Path) -> None:
        """Verify `key` against the base, then hand it to vLLM (once, whoever asks first)."""
        async with self._adding:
            if key in self._added:
                return
            await asyncio.to_thread(verify_adapter, path, self.base_path, self.shapes)
            self.metrics.adapter_loads.inc()
            try:
                await self.llm.add_lora(self._request(key, path))
            except Exception as error:  # vLLM refuses it (e.g. a rank over max_lora_rank)
                raise AdapterMismatchError(f"{path}: vLLM cannot load it: {error}") from error
            self._added[key] = path
            self.metrics.loaded_adapters.set(len(self.loaded_adapters()))

    async def _remove(self, key: str) -> bool:
        async with self._adding:
            if key not in self._added:
                return False
            await self.llm.remove_lora(self.ids.id_for(key))
            del self._added[key]
            self.metrics.loaded_adapters.set(len(self.loaded_adapters()))
            return True

    async def _score(self, key: str, path: Path, prompt: str, labels: Sequence[str]) -> list[float]:
        """Each label's summed log-probability after `prompt`: one request per label, `max_tokens` 1, with
        the prompt's log-probabilities (vLLM's prefix cache computes the shared prompt once)."""
        from vllm import SamplingParams

        await self._add(key, path)
        lora = self._request(key, path)
        prompt_ids, continuations = label_prompts(self.tokenizer, prompt, labels)
        params = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0)

        async def one(index: int, label_ids: list[int]) -> float:
            request = {"prompt_token_ids": prompt_ids + label_ids}
            final = None
            async for output in self.llm.generate(
                request, params, f"score-{id(request)}-{index}", lora_request=lora
            ):
                final = output
            assert final is not None and final.prompt_logprobs is not None
            logprobs = [
                None if p is None else {t: lp.logprob for t, lp in p.items()} for p in final.prompt_logprobs
            ]
            return label_logprob(logprobs, label_ids, len(prompt_ids))

        return list(await asyncio.gather(*(one(i, ids) for i, ids in enumerate(continuations))))
