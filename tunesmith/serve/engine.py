"""The generation engine: one worker thread owns the model and decodes dynamic batches.

Owns: the queue of generation jobs, forming batches (up to `max_batch_size` jobs, waiting at most
`max_wait_s` for the first job's companions, at most as many distinct adapters as the adapter
cache holds), a hand decode loop with a KV cache over a mixed-adapter batch (peft's
`adapter_names`), per-row sampling, stop strings, streaming text deltas to each job's sink, dropping
finished or cancelled rows from the batch, and draining on close. Does not own: HTTP, tokenizing
prompts, auth, or which adapter a request maps to (see `service`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from tunesmith.serve.adapters import AdapterCache
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.sampling import sample_next

logger = logging.getLogger(__name__)


class EngineClosedError(RuntimeError):
    """The engine is shutting down and takes no new jobs."""


@dataclass
class JobEvent:
    """What the worker tells a job's sink: a text delta, the end, or an error."""

    kind: Literal["delta", "done", "error"]
    text: str = ""
    finish_reason: str | None = None  # "stop" | "length" | "cancelled", on done
    completion_tokens: int = 0  # on done
    error: Exception | None = None  # on error


@dataclass(eq=False)
class GenerationJob:
    """One completion to generate. `sink` is called from the worker thread; it must not block."""

    prompt_ids: list[int]
    adapter: str | None  # loaded-adapter key (`name@version`), None for the bare base model
    adapter_path: Path | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stop: list[str]
    sink: Callable[[JobEvent], None]
    label: str = "base"  # the variant, for metrics
    cancelled: bool = False  # set by the caller when its client goes away; the row is dropped
    enqueued_at: float = field(default_factory=time.monotonic)


class _Row:
    """A job being decoded: its tokens so far and how much of their text was already sent."""

    def __init__(self, job: GenerationJob, tokenizer: PreTrainedTokenizerBase, eos: set[int]) -> None:
        self.job = job
        self.tokenizer = tokenizer
        self.eos = eos
        self.ids: list[int] = []
        self.sent = 0  # characters of the decoded text already emitted
        self.generator = None if job.seed is None else torch.Generator().manual_seed(job.seed)

    def step(self, token: int) -> bool:
        """Take one sampled token; emit what text is now safe to send. False once the job is done."""
        if token in self.eos:
            return self._finish(self._text(), "stop")
        self.ids.append(token)
        text = self._text()
        for stop in self.job.stop:
            at = text.find(stop)
            if at >= 0:
                return self._finish(text[:at], "stop")
        if len(self.ids) >= self.job.max_tokens:
            return self._finish(text, "length")
        safe = len(text) - _held_back(text, self.job.stop)
        self.job.sink(JobEvent("delta", text[self.sent : safe]))
        self.sent = max(self.sent, safe)
        return True

    def _text(self) -> str:
        return str(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _finish(self, text: str, reason: str) -> bool:
        if len(text) > self.sent:
            self.job.sink(JobEvent("delta", text[self.sent :]))
        self.job.sink(JobEvent("done", finish_reason=reason, completion_tokens=len(self.ids)))
        return False


def _held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` not yet safe to send: a partial UTF-8 character or stop string."""
    if text.endswith("\ufffd"):
        return 1
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:size]):
                held = size
                break
    return held


class GenerationEngine:
    """Queue jobs from any thread; one worker thread batches and decodes them."""

    def __init__(
        self,
        adapters: AdapterCache,
        tokenizer: PreTrainedTokenizerBase,
        *,
        max_batch_size: int,
        max_wait_s: float,
        metrics: ServeMetrics,
    ) -> None:
        self.adapters = adapters
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        eos = adapters.model.generation_config.eos_token_id
        self.eos = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self._pending: deque[GenerationJob] = deque()
        self._controls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._running = 0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ any thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="tunesmith-engine", daemon=True)
        self._thread.start()

    def submit(self, job: GenerationJob) -> None:
        with self._cond:
            if self._closing:
                raise EngineClosedError("the server is shutting down")
            self._pending.append(job)
            self.metrics.queued.set(len(self._pending))
            self._cond.notify()

    def call(self, function: Callable[[], Any]) -> Future[Any]:
        """Run `function` on the worker thread between batches (it owns the model)."""
        future: Future[Any] = Future()
        with self._cond:
            self._controls.append((function, future))
            self._cond.notify()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, finish every queued and running one, stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def queued(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return self._running

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while True:
            batch, control = self._next_work()
            if control is not None:
                function, future = control
                try:
                    future.set_result(function())
                except Exception as error:  # the caller gets it from the future
                    future.set_exception(error)
                continue
            if batch is None:
                return
            self._run_batch(batch)

    def _next_work(self) -> tuple[list[GenerationJob] | None, tuple[Callable[[], Any], Future[Any]] | None]:
        with self._cond:
            while not self._pending and not self._controls and not self._closing:
                self._cond.wait()
            if self._controls:
                return None, self._controls.popleft()
            if not self._pending:
                return None, None  # closing and drained
            deadline = self._pending[0].enqueued_at + self.max_wait_s
            while len(self._pending) < self.max_batch_size and not self._closing and not self._controls:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = self._take_batch()
            self._running = len(batch)
            self.metrics.queued.set(len(self._pending))
            return batch, None

    def _take_batch(self) -> list[GenerationJob]:
        """FIFO jobs up to the batch size, with no more distinct adapters than the cache holds."""
        batch: list[GenerationJob] = []
        adapters: set[str] = set()
        skipped: list[GenerationJob] = []
        while self._pending and len(batch) < self.max_batch_size:
            job = self._pending.popleft()
            if job.cancelled:
                job.sink(JobEvent("done", finish_reason="cancelled"))
                continue
            if job.adapter is not None and job.adapter not in adapters:
                if len(adapters) >= self.adapters.capacity:
                    skipped.append(job)
                    continue
                adapters.add(job.adapter)
            batch.append(job)
        self._pending.extendleft(reversed(skipped))
        return batch

    def _run_batch(self, batch: list[GenerationJob]) -> None:
        pinned = {job.adapter for job in batch if job.adapter is not None}
        ready: list[GenerationJob] = []
        failed: dict[str, Exception] = {}
        for job in batch:
            if job.adapter is not None and job.adapter not in failed:
                assert job.adapter_path is not None
                try:
                    self.adapters.ensure(job.adapter, job.adapter_path, pinned)
                except Exception as error:  # a bad adapter fails its own requests, not the batch
                    logger.warning("cannot load adapter %s: %s", job.adapter, error)
                    failed[job.adapter] = error
            if job.adapter in failed:
                job.sink(JobEvent("error", error=failed[job.adapter]))
            else:
                ready.append(job)
        self.metrics.loaded_adapters.set(len(self.adapters.loaded))
        if ready:
            started = time.monotonic()
            try:
                tokens = self._decode(ready)
            except Exception as error:
                logger.exception("batch of %d failed", len(ready))
                for job in ready:
                    job.sink(JobEvent("error", error=error))
                tokens = 0
            elapsed = time.monotonic() - started
            self.metrics.observe_batch(len(ready), len(pinned), tokens, elapsed)
        with self._cond:
            self._running = 0

    @torch.inference_mode()
    def _decode(self, jobs: list[GenerationJob]) -> int:
        """Decode `jobs` together until each is done or cancelled; returns tokens generated."""
        model: Any = self.adapters.model
        device = next(model.parameters()).device
        rows = [_Row(job, self.tokenizer, self.eos) for job in jobs]
        width = max(len(job.prompt_ids) for job in jobs)
        ids = torch.full((len(jobs), width), self.tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)  # (B, T), left padding
        for index, job in enumerate(jobs):
            ids[index, width - len(job.prompt_ids) :] = torch.tensor(job.prompt_ids)
            mask[index, width - len(job.prompt_ids) :] = 1
        ids, mask = ids.to(device), mask.to(device)
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        names = [job.adapter or "__base__" for job in jobs]
        peft = self.adapters.is_peft()
        cache = DynamicCache()
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **({"adapter_names": names} if peft else {}),
        ).logits[:, -1]  # (B, V)
        generated = 0
        while True:
            tokens = sample_next(
                logits,
                [row.job.temperature for row in rows],
                [row.job.top_p for row in rows],
                [row.generator for row in rows],
            )
            generated += len(tokens)
            keep = []
            for index, (row, token) in enumerate(zip(rows, tokens, strict=True)):
                if row.job.cancelled:
                    row.job.sink(JobEvent("done", finish_reason="cancelled", completion_tokens=len(row.ids)))
                elif row.step(token):
                    keep.append(index)
            if not keep:
                return generated
            next_ids = torch.tensor([[tokens[index]] for index in keep], device=device)  # (B, 1)
            if len(keep) < len(rows):  # free the finished rows' compute and cache
                selected = torch.tensor(keep, device=device)
                cache.batch_select_indices(selected)
                mask, position = mask[selected], position[selected]
                rows, names = [rows[index] for index in keep], [names[index] for index in keep]
                self._running = len(rows)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            position = position[:, -1:] + 1
            logits = model(
                input_ids=next_ids,
                attention_mask=mask,
                position_ids=position,
                cache=cache,
                use_cache=True,
                **({"adapter_names": names} if peft else {}),
            ).logits[:, -1]
