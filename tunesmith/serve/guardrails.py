"""Guardrails in the request path: which guardrails apply to a request, checking its prompt, recording.

Owns: choosing a request's guardrails (those of the deployment it named, else of the adapter that
answers, else of `base`: the first of these with any), where stored settings (`tunesmith guardrails
set`, `PUT /admin/guardrails/{target}`) replace the config file's for the same target and are read
at every request (one indexed query, so a change applies to the next request, as deployment weights
do); compiling each distinct spec once; checking a prompt (the text guards, then the classifier
adapter, see `moderation`); and recording actions: counted in `/metrics` at once, appended to the
registry's guardrail log from a worker thread the request does not wait for (a log that cannot be
written is logged, never the client's problem). Does not own: the guards themselves (see `audit.guardrails`) or response shapes
(see `routes.openai`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from tunesmith.audit.guardrails import Classifier, Guard, GuardEvent, InputVerdict, check_input, compile_guard
from tunesmith.config import GuardrailSpec
from tunesmith.registry.guardrail_store import GuardrailStore
from tunesmith.registry.serving_store import BASE_MODEL_NAME
from tunesmith.serve.errors import APIError
from tunesmith.serve.metrics import ServeMetrics

logger = logging.getLogger(__name__)

# (classifier settings, text) -> each label's probability (see `moderation.classify`)
Classify = Callable[[Classifier, str], Awaitable[list[float]]]


@dataclass(frozen=True)
class ActiveGuard:
    """The guardrails that apply to one request, and whose they are (the target named in the log)."""

    target: str
    guard: Guard


@lru_cache(maxsize=256)
def _compiled(settings: str) -> Guard:
    return compile_guard(GuardrailSpec.model_validate_json(settings))


class ServeGuardrails:
    """The server's guardrails: config-file settings, stored settings, metrics and the action log."""

    def __init__(
        self,
        store: GuardrailStore,
        configured: dict[str, GuardrailSpec],
        metrics: ServeMetrics,
        classify: Classify,
    ) -> None:
        self.store = store
        self.configured = {target: spec.model_dump_json() for target, spec in configured.items()}
        self.metrics = metrics
        self.classify = classify

    def for_request(self, deployment: str | None, adapter: str | None) -> ActiveGuard | None:
        """The guardrails of the deployment named, else of the answering adapter (a name), else of `base`."""
        candidates = [name for name in (deployment, adapter or BASE_MODEL_NAME) if name is not None]
        stored = self.store.find(candidates)
        for target in candidates:
            if target in stored:
                return ActiveGuard(target, _compiled(json.dumps(stored[target], sort_keys=True)))
            if target in self.configured:
                return ActiveGuard(target, _compiled(self.configured[target]))
        return None

    async def check_prompt(
        self, active: ActiveGuard, texts: list[str], topic_texts: list[str], request_id: str
    ) -> InputVerdict:
        """`texts` through the text guards and the classifier; every action recorded."""
        verdict = check_input(active.guard, texts, topic_texts=topic_texts)
        classifier = active.guard.classifier
        if verdict.blocked is None and classifier is not None:
            verdict.blocked = await self.classified(classifier, "\n\n".join(verdict.texts), "input")
            if verdict.blocked is not None:
                verdict.events.append(verdict.blocked)
        self.record(request_id, active.target, verdict.events)
        return verdict

    async def classified(self, classifier: Classifier, text: str, direction: str) -> GuardEvent | None:
        """The block of `text` by the classifier adapter (naming its likeliest blocked label), or None."""
        probabilities = await self.classify(classifier, text)
        scored = list(zip(probabilities, classifier.labels, strict=True))
        blocked = [
            (probability, label) for probability, label in scored if label in classifier.blocked_labels
        ]
        if sum(probability for probability, _ in blocked) < classifier.threshold:
            return None
        return GuardEvent("classifier", "block", max(blocked)[1], direction)

    def record(self, request_id: str, target: str, events: Sequence[GuardEvent]) -> None:
        """Count `events` in `/metrics` now and append them to the guardrail log from a worker thread.

        Not awaited: the request does not wait for the log, and a stream its client abandoned (whose
        handler is being cancelled) still gets its actions logged.
        """
        if not events:
            return
        for event in events:
            self.metrics.guardrail_actions.labels(event.guard, event.action).inc()
        rows = [
            {"direction": e.direction, "guard": e.guard, "action": e.action, "reason": e.reason}
            for e in events
        ]
        asyncio.get_running_loop().run_in_executor(None, self._log, request_id, target, rows)

    def _log(self, request_id: str, target: str, rows: list[dict[str, str]]) -> None:
        try:
            self.store.record_events(request_id, target, rows)
        except Exception:  # the request went on; the metrics have the count
            logger.exception("could not log guardrail actions of request %s", request_id)


def blocked_error(event: GuardEvent, param: str) -> APIError:
    """The 400 a blocked prompt gets: which guard, in words a client may read."""
    return APIError(400, event.message(), param=param, code="content_filter")
