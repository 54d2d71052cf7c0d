"""The generation engine: one worker thread owns the model and decodes dynamic batches.

Owns: the bounded queue of generation jobs (full: `EngineBusyError`; a job queued too long fails with
`QueueTimeoutError`); continuous batching (a batch starts with up to `max_batch_size` jobs, the first
waiting at most `max_wait_s` for company, and queued jobs join free rows at every decode step, their KV
cache merged in left-padded); scheduling new prompts' chunks between decode steps (chunked prefill); at
most as many distinct adapters per batch as the adapter cache holds; a hand decode loop with a KV cache
over a mixed-adapter batch (each row through its adapter's slot of the stacked LoRA layers, see `lora`);
per-row sampling and stop strings; streaming text deltas to each job's sink; dropping finished or
cancelled rows (and the left padding no row needs, so memory follows the live rows); failing one job
alone for its own fault (its adapter, its seed, its row's sampling) and every live job only when the
batch itself fails; a heartbeat for health checks; draining on close. Does not own: prefix caching and
computing a prompt chunk (see `prefill`), which queued job gets a free row (fairly across tenants and
adapters, see `pending`), the job and batch state (see `jobs`), HTTP, tokenizing prompts, auth, or which
adapter a request maps to (see `service`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedTokenizerBase

from tunesmith.eval.classify import score_labels
from tunesmith.serve.adapters import AdapterCache
from tunesmith.serve.inference import EngineBusyError, EngineClosedError
from tunesmith.serve.jobs import (
    AdapterLoadError,
    Batch,
    GenerationJob,
    JobEvent,
    QueueTimeoutError,
    Row,
    RowError,
)
from tunesmith.serve.metrics import ServeMetrics
from tunesmith.serve.pending import PendingJobs
from tunesmith.serve.prefill import Prefill, PrefixCache, plan_prefills, run_chunk
from tunesmith.serve.sampling import SamplingError, sample_next

logger = logging.getLogger(__name__)
__all__ = ["EngineBusyError", "EngineClosedError", "GenerationEngine"]  # the errors are `inference`'s


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
        max_queued: int = 1024,
        max_queue_wait_s: float | None = None,
        prefill_chunk: int = 256,
        prefix_cache_tokens: int = 8192,
    ) -> None:
        self.adapters = adapters
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.metrics = metrics
        self.max_queued = max_queued
        self.max_queue_wait_s = max_queue_wait_s
        self.prefill_chunk = prefill_chunk  # prompt columns computed between two decode steps
        # keys and values of recent prompt openings (0: no prefix caching)
        self.prefixes = PrefixCache(prefix_cache_tokens) if prefix_cache_tokens else None
        self.columns = 0  # key positions per row of the batch decoding now (0: none)
        self.heartbeat = time.monotonic()  # the worker's last sign of progress
        eos = adapters.model.generation_config.eos_token_id
        self.eos = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
        self._pending = PendingJobs(rows_per_slot=max_batch_size)
        self._controls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._running = 0  # jobs decoding or having their prompts computed
        self._live: list[GenerationJob] = []  # those jobs (to fail on a crash)
        self._busy = False  # running a control call
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ any thread

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="tunesmith-engine", daemon=True)
        self._thread.start()

    def submit(self, job: GenerationJob) -> None:
        self.submit_all([job])

    def submit_all(self, jobs: list[GenerationJob]) -> None:
        """Queue all of `jobs` or none: EngineBusyError if they would overfill the queue."""
        with self._cond:
            if self._closing:
                raise EngineClosedError("the server is shutting down")
            if len(self._pending) + len(jobs) > self.max_queued:
                raise EngineBusyError(f"the server is busy ({len(self._pending)} generations queued)")
            self._pending.add(jobs)
            self.metrics.queued.set(len(self._pending))
            self._cond.notify()

    def stalled_for(self) -> float:
        """Seconds the worker has had work (or been in a call) without progress: 0 when idle, inf if dead."""
        if self._thread is None:
            return 0.0
        if not self._thread.is_alive():
            return float("inf") if not self._closing else 0.0
        if not self._running and not self._pending and not self._busy:
            return 0.0
        return time.monotonic() - self.heartbeat

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

    # ------------------------------------------------------------------ adapters (see `inference`)

    @property
    def adapter_capacity(self) -> int:
        return self.adapters.capacity

    def loaded_adapters(self) -> list[str]:
        return self.adapters.loaded

    def load_adapter(self, key: str, path: Path) -> Future[None]:
        return self.call(lambda: self.adapters.ensure(key, path, pinned=set()))

    def unload_adapter(self, key: str) -> Future[bool]:
        return self.call(lambda: self.adapters.unload(key))

    def score_labels(self, key: str, path: Path, prompt: str, labels: Sequence[str]) -> Future[list[float]]:
        """As `eval.classify.score_labels` scores one prompt, on the worker thread (it owns the model)."""

        def run() -> list[float]:
            self.adapters.ensure(key, path, pinned=set())
            with self.adapters.routed([key]):
                scores = score_labels(self.adapters.model, self.tokenizer, [prompt], labels, batch_size=1)
            return [float(score) for score in scores[0]]

        return self.call(run)

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while True:
            batch, control = self._next_work()
            self.heartbeat = time.monotonic()
            if control is not None:
                function, future = control
                self._busy = True
                try:
                    future.set_result(function())
                except Exception as error:  # the caller gets it from the future
                    future.set_exception(error)
                finally:
                    self._busy = False
                    self.heartbeat = time.monotonic()
                continue
            if batch is None:
                return
            try:
                self._serve(batch)
            except Exception as error:  # the batch itself failed (e.g. out of memory): its jobs fail
                failed = list(dict.fromkeys([*batch, *self._live]))
                logger.exception("decoding failed; requests %s", ", ".join(job.request_id for job in failed))
                for job in failed:
                    job.sink(JobEvent("error", error=error))
            with self._cond:
                self._running = 0
                self._live = []
                self.columns = 0

    def _next_work(self) -> tuple[list[GenerationJob] | None, tuple[Callable[[], Any], Future[Any]] | None]:
        with self._cond:
            while not self._pending and not self._controls and not self._closing:
                self.heartbeat = time.monotonic()
                self._cond.wait(1.0)
            if self._controls:
                return None, self._controls.popleft()
            if not self._pending:
                return None, None  # closing and drained
            deadline = self._pending.oldest() + self.max_wait_s
            while len(self._pending) < self.max_batch_size and not self._closing and not self._controls:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._take_jobs(self.max_batch_size, Counter()), None

    def _take_jobs(self, limit: int, active: Counter[str]) -> list[GenerationJob]:
        """Up to `limit` queued jobs, tenants and adapters in turn, keeping the distinct adapters (with
        `active`, those decoding and their rows) within what the adapter cache holds (see
        `PendingJobs.take`). Call with the lock held. Jobs queued longer than `max_queue_wait_s` fail
        with `QueueTimeoutError`.
        """
        self._expire_queued()
        taken, cancelled = self._pending.take(limit, active, self.adapters.capacity)
        self._running += len(taken)  # off the queue, so running (adapter loading and prefill count)
        for job in cancelled:
            job.sink(JobEvent("done", finish_reason="cancelled"))
        self.metrics.queued.set(len(self._pending))
        return taken

    def _expire_queued(self) -> None:
        if self.max_queue_wait_s is None:
            return
        expired = self._pending.expire(time.monotonic() - self.max_queue_wait_s)
        if not expired:
            return
        self.metrics.limits_hit.labels("queue_timeout").inc(len(expired))
        for job in expired:
            job.sink(JobEvent("error", error=QueueTimeoutError("the request waited too long in the queue")))

    def _serve(self, jobs: list[GenerationJob]) -> None:
        """Decode `jobs`, letting queued jobs join free rows at every step, until no row is left.

        Joining (continuous batching) keeps time to first token low under load: a request waits for a
        free row, not for the whole batch before it to finish. New prompts are computed `prefill_chunk`
        columns at a time with a decode step of the running rows between two chunks (chunked prefill),
        so a long prompt delays the running streams by a chunk, not by the whole prompt. Admin calls wait
        until the rows drain.
        """
        prefills: deque[Prefill] = deque(self._plan(self._load_adapters(jobs, set())))
        batch: Batch | None = None
        while True:
            with self._cond:
                joining = []
                rows = Counter(job.adapter for job in self._jobs(batch, prefills) if job.adapter is not None)
                room = self.max_batch_size - len(self._jobs(batch, prefills))
                if not self._controls and room > 0:
                    joining = self._take_jobs(room, rows)
            if joining:
                prefills.extend(self._plan(self._load_adapters(joining, set(rows))))
            # the jobs to fail if this step fails, running while their prompts are computed too (health
            # and the stall check count them from the first chunk on, not only once they decode)
            self._live = self._jobs(batch, prefills)
            self._running = len(self._live)
            if prefills:
                ready = self._prefill_chunk(prefills[0])
                if ready is not None:
                    prefills.popleft()
                    if ready.rows:
                        batch = ready if batch is None else batch.merge(ready)
            if batch is not None and not batch.rows:
                batch = None
            self._live = self._jobs(batch, prefills)
            self._running = len(self._live)
            self.heartbeat = time.monotonic()
            if batch is None:
                if not prefills:
                    return
                continue
            self.columns = batch.columns + 1
            batch.mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=-1)
            batch.position = batch.position + 1
            logits = self._forward(batch.rows, batch.next_ids, batch.mask, batch.position, batch.cache)
            self._advance(batch, logits)

    @staticmethod
    def _jobs(batch: Batch | None, prefills: deque[Prefill]) -> list[GenerationJob]:
        """The jobs decoding in `batch` or having their prompts computed."""
        decoding = [] if batch is None else [row.job for row in batch.rows]
        return decoding + [row.job for prefill in prefills for row in prefill.rows]

    def _load_adapters(self, jobs: list[GenerationJob], active: set[str]) -> list[GenerationJob]:
        """The jobs whose adapters are (now) loaded; the others get their load error."""
        pinned = active | {job.adapter for job in jobs if job.adapter is not None}
        ready: list[GenerationJob] = []
        failed: dict[str, Exception] = {}
        for job in jobs:
            if job.adapter is not None and job.adapter not in failed:
                assert job.adapter_path is not None
                try:
                    if job.adapter not in self.adapters.loaded:
                        self.metrics.adapter_loads.inc()
                    self.adapters.ensure(job.adapter, job.adapter_path, pinned)
                except ValueError as error:  # a bad adapter fails its own requests, not the batch
                    logger.warning("cannot load adapter %s: %s", job.adapter, error)
                    # the reason, with the server's paths (the adapter's, the base's) replaced by names
                    reason = str(error).replace(str(job.adapter_path), job.adapter)
                    reason = reason.replace(self.adapters.base_path, "the served base model")
                    failed[job.adapter] = AdapterLoadError(
                        f"adapter {job.adapter} cannot be served: {reason}"
                    )
                except Exception:
                    logger.exception("cannot load adapter %s (request %s)", job.adapter, job.request_id)
                    failed[job.adapter] = AdapterLoadError(f"adapter {job.adapter} could not be loaded")
            if job.adapter in failed:
                job.sink(JobEvent("error", error=failed[job.adapter]))
            else:
                ready.append(job)
        self.metrics.loaded_adapters.set(len(self.adapters.loaded))
        return ready

    def _plan(self, jobs: list[GenerationJob]) -> list[Prefill]:
        """Rows for `jobs`, grouped into prefills by the cached prefix each prompt found."""
        device = next(self.adapters.model.parameters()).device
        rows = []
        for job in jobs:
            try:
                rows.append(Row(job, self.tokenizer, self.eos, device))
            except Exception as error:  # e.g. a seed the generator refuses: this job fails alone
                logger.warning("request %s cannot start: %s", job.request_id, error)
                job.sink(JobEvent("error", error=RowError(f"the request cannot start: {error}")))
        pad_id = self.tokenizer.pad_token_id
        assert isinstance(pad_id, int)
        return plan_prefills(rows, self.prefixes, pad_id)

    @torch.inference_mode()
    def _prefill_chunk(self, prefill: Prefill) -> Batch | None:
        """Compute the next chunk of `prefill`'s prompts; once done, sample their first tokens: their batch."""
        device = next(self.adapters.model.parameters()).device
        done = run_chunk(prefill, self.prefill_chunk, self._forward, self.prefixes, device)
        if done is None:
            return None
        batch, logits = done
        self._advance(batch, logits)
        return batch

    @torch.inference_mode()
    def _forward(
        self,
        rows: list[Row],
        ids: torch.Tensor,
        mask: torch.Tensor,
        position: torch.Tensor,
        cache: DynamicCache,
    ) -> torch.Tensor:
        """Last-position logits (B, V), each row through its own adapter's slot (see `tunesmith.lora.stacked`)."""
        with self.adapters.routed([row.job.adapter for row in rows]):
            output = self.adapters.model(
                input_ids=ids, attention_mask=mask, position_ids=position, cache=cache, use_cache=True,
                logits_to_keep=1,
            )  # fmt: skip
        return output.logits[:, -1]  # type: ignore[no-any-return]

    def _advance(self, batch: Batch, logits: torch.Tensor) -> None:
        """Sample each row's next token, stream it, and drop the rows that are done or cancelled."""
        rows = batch.rows
        tokens = sample_next(
            logits,
            [r.job.temperature for r in rows],
            [r.job.top_p for r in rows],
            [r.generator for r in rows],
        )
        keep = []
        for index, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            if row.job.cancelled:
                row.job.sink(JobEvent("done", finish_reason="cancelled", completion_tokens=len(row.ids)))
            elif isinstance(token, SamplingError):  # this row alone fails; the others go on
                logger.warning("request %s: %s", row.job.request_id, token)
                row.job.sink(JobEvent("error", error=RowError(str(token))))
            elif row.step(token):
                keep.append(index)
        next_ids = [token if isinstance(token, int) else 0 for token in tokens]
        batch.next_ids = torch.tensor(next_ids, device=batch.mask.device).view(-1, 1)
        batch.keep(keep)
        self.metrics.observe_step(len(rows), len({row.job.adapter for row in rows}), len(tokens))
