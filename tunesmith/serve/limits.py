"""Per-tenant admission limits and the failed-authentication limit. No torch, no HTTP.

Owns: how many requests a tenant may have in flight, a token bucket of prompt and completion tokens
per tenant per minute (a request reserves its prompt and its `max_tokens` on admission; what it did
not generate is refunded when it finishes), and how many failed key checks a client address may make
per window. Each refusal says how long to wait (`LimitError.retry_after`); a request that reserves
more tokens than a whole minute's allowance could never pass, and says so (`TooManyTokensError`).
Does not own: turning a refusal into a response (see `deps`, `service`) or the queue bound (see
`engine`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass


class LimitError(Exception):
    """A limit refused the request; `retry_after` seconds from now it may pass."""

    def __init__(self, limit: str, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit  # the metric label: tenant_concurrency, tenant_tokens, auth_failures
        self.message = message
        self.retry_after = max(1, math.ceil(retry_after))


class TooManyTokensError(Exception):
    """A request reserves more tokens than its tenant may use in a minute: waiting would not help."""


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TenantLimits:
    """Concurrency and token-rate limits per tenant; None switches a limit off. Thread-safe."""

    def __init__(self, max_concurrent: int | None, tokens_per_minute: int | None) -> None:
        self.max_concurrent = max_concurrent
        self.tokens_per_minute = tokens_per_minute
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, tenant: str, tokens: int) -> None:
        """Take a slot and reserve `tokens` for `tenant`, or raise LimitError (nothing taken).

        Raises TooManyTokensError, whatever the tenant's state, if `tokens` is over the minute's allowance.
        """
        if self.tokens_per_minute is not None and tokens > self.tokens_per_minute:
            raise TooManyTokensError(
                f"this request reserves {tokens} tokens (prompt and max_tokens), more than the "
                f"{self.tokens_per_minute} per minute its tenant may use; lower max_tokens or shorten the prompt"
            )
        with self._lock:
            if self.max_concurrent is not None and self._in_flight.get(tenant, 0) >= self.max_concurrent:
                raise LimitError(
                    "tenant_concurrency",
                    f"too many requests in flight: at most {self.max_concurrent} at a time per tenant",
                    retry_after=1,
                )
            if self.tokens_per_minute is not None:
                bucket = self._refilled(tenant)
                if tokens > bucket.tokens:
                    wait = (tokens - bucket.tokens) / (self.tokens_per_minute / 60)
                    raise LimitError(
                        "tenant_tokens",
                        f"token rate limit: this request reserves {tokens} tokens (prompt and max_tokens), "
                        f"the tenant may use {self.tokens_per_minute} per minute",
                        retry_after=wait,
                    )
                bucket.tokens -= tokens
            self._in_flight[tenant] = self._in_flight.get(tenant, 0) + 1

    def release(self, tenant: str, unused_tokens: int) -> None:
        """The request finished: free its slot and refund the tokens it reserved but did not use."""
        with self._lock:
            self._in_flight[tenant] = self._in_flight.get(tenant, 1) - 1
            if self._in_flight[tenant] <= 0:
                del self._in_flight[tenant]
            if self.tokens_per_minute is not None and unused_tokens > 0:
                bucket = self._refilled(tenant)
                bucket.tokens = min(self.tokens_per_minute, bucket.tokens + unused_tokens)

    def _refilled(self, tenant: str) -> _Bucket:
        assert self.tokens_per_minute is not None
        now = time.monotonic()
        bucket = self._buckets.setdefault(tenant, _Bucket(float(self.tokens_per_minute), now))
        rate = self.tokens_per_minute / 60
        bucket.tokens = min(float(self.tokens_per_minute), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        return bucket


class AuthFailureLimit:
    """At most `max_failures` failed key checks per client address per `window_s` seconds."""

    def __init__(self, max_failures: int, window_s: float) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def check(self, client: str) -> None:
        """Raise LimitError while `client` is over the limit (before its key is even looked at)."""
        with self._lock:
            failures = self._recent(client)
            if len(failures) >= self.max_failures:
                raise LimitError(
                    "auth_failures",
                    "too many failed authentication attempts from this address; wait before trying again",
                    retry_after=failures[0] + self.window_s - time.monotonic(),
                )

    def record_failure(self, client: str) -> None:
        with self._lock:
            self._recent(client).append(time.monotonic())

    def _recent(self, client: str) -> deque[float]:
        now = time.monotonic()
        for address in [
            a for a, times in self._failures.items() if not times or times[-1] < now - self.window_s
        ]:
            del self._failures[address]  # forget quiet addresses, so the table stays small
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] < now - self.window_s:
            failures.popleft()
        return failures
