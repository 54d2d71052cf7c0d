"""The classifier guardrail: a tunesmith classification fine-tune, served on the same base, as moderator.

Owns: scoring a prompt (or a whole answer) with the classifier adapter, the way `tunesmith eval` scores classification
(every label's summed log-likelihood as the assistant's answer, scored on the prompt's cache, see
`eval.classify.score_labels`), turned into probabilities over the labels. The prompt is rendered as
the classifier was trained on text/label rows (its instruction, a blank line, the text). It runs on
the engine's worker thread, which owns the model, between decode batches (under load it waits for
the running batch to drain); it is not one of the fast, model-free guards. Does not own: deciding
what blocks (see `serve.guardrails`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
from starlette.concurrency import run_in_threadpool

from tunesmith.audit.guardrails import Classifier
from tunesmith.data.ingest import DEFAULT_INSTRUCTION
from tunesmith.data.render import render_text
from tunesmith.eval.classify import score_labels
from tunesmith.registry.serving_store import Caller, NotFoundError, ServingStore, parse_model_ref
from tunesmith.serve.engine import GenerationEngine
from tunesmith.serve.errors import APIError

_ADMIN = Caller(tenant=None, is_admin=True)  # the classifier was named by an admin


class Moderator:
    """Scores prompts with classifier adapters on the served base model."""

    def __init__(self, engine: GenerationEngine, store: ServingStore) -> None:
        self.engine = engine
        self.store = store

    async def classify(self, classifier: Classifier, text: str) -> list[float]:
        """Each of `classifier.labels`' probability for `text` (a softmax over their log-likelihoods)."""
        try:
            name, version = parse_model_ref(classifier.adapter)
            adapter = await run_in_threadpool(self.store.find_adapter, _ADMIN, name, version)
        except NotFoundError:
            raise APIError(
                503, "this model's guardrail classifier is not available; ask the server's admin",
                type_="server_error", code="guardrail_unavailable",
            ) from None  # fmt: skip
        cache, tokenizer = self.engine.adapters, self.engine.tokenizer
        instruction = classifier.instruction or DEFAULT_INSTRUCTION
        prompt = render_text(
            tokenizer, [{"role": "user", "content": f"{instruction}\n\n{text}"}], generation_prompt=True
        )

        def run() -> list[float]:
            cache.ensure(adapter.key, Path(adapter.path), pinned=set())
            with cache.routed([adapter.key]):
                scores = score_labels(cache.model, tokenizer, [prompt], classifier.labels, batch_size=1)
            return [float(p) for p in torch.softmax(scores[0], dim=-1)]

        result: list[float] = await asyncio.wrap_future(self.engine.call(run))
        return result
