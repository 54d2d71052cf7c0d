"""Prometheus metrics of one server: requests, latency, time to first token, tokens, batches.

Owns: the metric objects, in a registry per app (so two apps in one process never clash). Does not
own: when they are updated (engine and routes do) or the `/metrics` route.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class ServeMetrics:
    """Every metric the server exports, labelled by variant (the model that answered) where it helps."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "tunesmith_requests", "Requests by endpoint, variant and HTTP status.",
            ["endpoint", "variant", "status"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "tunesmith_request_latency_seconds", "Time from request to last token.", ["variant"],
            buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "tunesmith_time_to_first_token_seconds", "Time from request to the first generated token.",
            ["variant"], buckets=_LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            "tunesmith_prompt_tokens", "Prompt tokens read.", ["variant"], registry=registry
        )
        self.completion_tokens = Counter(
            "tunesmith_completion_tokens", "Tokens generated.", ["variant"], registry=registry
        )
        self.request_tokens_per_second = Histogram(
            "tunesmith_request_tokens_per_second", "Generated tokens per second of each request.", ["variant"],
            buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000), registry=registry,
        )  # fmt: skip
        self.decode_tokens_per_second = Gauge(
            "tunesmith_decode_tokens_per_second",
            "Tokens generated per second, all rows, over the last window.",
            registry=registry,
        )
        self.batch_size = Histogram(
            "tunesmith_batch_size",
            "Rows (requests) per decode step.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.batch_adapters = Histogram(
            "tunesmith_batch_adapters", "Distinct adapters per decode step.", buckets=_BATCH_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.queued = Gauge("tunesmith_queued_requests", "Jobs waiting for a batch.", registry=registry)
        self.loaded_adapters = Gauge("tunesmith_loaded_adapters", "Adapters in memory.", registry=registry)
        self.adapter_loads = Counter(
            "tunesmith_adapter_loads", "Adapters read from disk into a slot (often: more adapters in use than "
            "max_loaded_adapters).", registry=registry,
        )  # fmt: skip
        self.limits_hit = Counter(
            "tunesmith_limits_hit", "Requests refused or failed by a limit (queue_full, tenant_concurrency, "
            "tenant_tokens, queue_timeout, request_timeout, auth_failures).", ["limit"], registry=registry,
        )  # fmt: skip
        self.request_log_failures = Counter(
            "tunesmith_request_log_failures", "Finished requests the registry could not log (served anyway).",
            registry=registry,
        )  # fmt: skip
        self.monitor_alerts = Gauge(
            "tunesmith_monitor_alerts", "Alerts raised by `tunesmith monitor check`, by deployment and kind.",
            ["deployment", "kind"], registry=registry,
        )  # fmt: skip
        self.guardrail_actions = Counter(
            "tunesmith_guardrail_actions", "Guardrail actions by guard (pii, terms, topics, max_length, "
            "classifier) and action (flag, redact, block).", ["guard", "action"], registry=registry,
        )  # fmt: skip
        self._window_tokens = 0
        self._window_start = time.monotonic()

    def observe_step(self, rows: int, adapters: int, tokens: int) -> None:
        """One decode step: its rows and adapters; tokens/s over windows of at least a second."""
        self.batch_size.observe(rows)
        self.batch_adapters.observe(adapters)
        self._window_tokens += tokens
        elapsed = time.monotonic() - self._window_start
        if elapsed >= 1.0:
            self.decode_tokens_per_second.set(self._window_tokens / elapsed)
            self._window_tokens, self._window_start = 0, time.monotonic()
