"""The classifier guardrail: a tunesmith classification fine-tune, served on the same base, as moderator.

Owns: scoring a prompt (or a whole answer) with the classifier adapter, the way `tunesmith eval` scores classification
(every label's summed log-likelihood as the assistant's answer, scored on the prompt's cache, see
`eval.classify.score_labels`), turned into probabilities over the labels. The prompt is rendered as
the classifier was trained on text/label rows (its instruction, a blank line, the text). It runs on
the engine (the embedded one scores on its worker thread between decode batches, so under load it
waits for the running batch to drain; vLLM scores from prompt log-probabilities); it is not one of the
fast, model-free guards. Does not own: deciding what blocks (see `serve.guardrails`) or the scoring
itself (see `InferenceEngine.score_labels`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import torch
from starlette.concurrency import run_in_threadpool
from transformers import PreTrainedTokenizerBase

from tunesmith.audit.guardrails import Classifier
from tunesmith.data.ingest import DEFAULT_INSTRUCTION
from tunesmith.data.render import render_text
from tunesmith.registry.serving_store import Caller, NotFoundError, ServingStore, parse_model_ref
from tunesmith.serve.errors import APIError
from tunesmith.serve.inference import InferenceEngine

_ADMIN = Caller(tenant=None, is_admin=True)  # the classifier was named by an admin


class Moderator:
    """Scores prompts with classifier adapters on the served base model."""

    def __init__(
        self, engine: InferenceEngine, store: ServingStore, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        self.engine = engine
        self.store = store
        self.tokenizer = tokenizer

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
        instruction = classifier.instruction or DEFAULT_INSTRUCTION
        prompt = render_text(
            self.tokenizer, [{"role": "user", "content": f"{instruction}\n\n{text}"}], generation_prompt=True
        )
        scores = await asyncio.wrap_future(
            self.engine.score_labels(adapter.key, Path(adapter.path), prompt, classifier.labels)
        )
        return [float(p) for p in torch.softmax(torch.tensor(scores), dim=-1)]
