"""Task metrics: pure functions of predictions and references, built on the reference packages.

Owns: ROUGE-L (rouge-score, the Google Research implementation), corpus BLEU (sacrebleu) and exact
match. Scales follow each metric's convention: ROUGE-L F1 and exact match in [0, 1], BLEU in [0, 100].
Does not own: generation or reporting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import sacrebleu
from rouge_score import rouge_scorer

_SPACE = re.compile(r"\s+")


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace and trim; case and punctuation are kept (they are part of a voice)."""
    return _SPACE.sub(" ", text).strip()


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (longest common subsequence, Porter-stemmed tokens)."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores = [
        scorer.score(reference, prediction)["rougeL"].fmeasure
        for prediction, reference in _pairs(predictions, references)
    ]
    return sum(scores) / len(scores)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenizer, exponential smoothing off), 0–100."""
    pairs = _pairs(predictions, references)
    return float(sacrebleu.corpus_bleu([p for p, _ in pairs], [[r for _, r in pairs]]).score)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after whitespace normalisation."""
    pairs = _pairs(predictions, references)
    return sum(normalize_space(p) == normalize_space(r) for p, r in pairs) / len(pairs)


def _pairs(predictions: Sequence[str], references: Sequence[str]) -> list[tuple[str, str]]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    return list(zip(predictions, references, strict=True))


GENERATION_METRICS: dict[str, Callable[[Sequence[str], Sequence[str]], float]] = {
    "rouge_l": rouge_l,
    "bleu": bleu,
    "exact_match": exact_match,
}
