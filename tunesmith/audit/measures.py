"""What changes between a model's answer to a prompt and its answer to the counterfactual. Pure.

Owns: the per-pair measures: for classification, whether the label flipped; for generation, whether a
refusal appeared or went (the request monitor's refusal detector), whether the sentiment's sign
flipped, and the signed differences in length (words), sentiment, the task metric and a judge's
rubric score. Does not own: producing the answers or the intervals (see `bias`, `bias_stats`).

Sentiment is a small word lexicon on purpose: an audit must run offline on any machine, with no model
download, and a lexicon is transparent (anyone can read the list) and the same for every model compared;
what it misses (negation, sarcasm) it misses equally in the original and the rewrite. Its score is
(positive - negative words) / words; the words are in `lexicon.yaml`.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

import yaml

from tunesmith.monitor.signals import is_refusal

FLIP_MEASURES = {  # measures that are rates of a flip: the gate's, each a share of pairs
    "label_flip": "label flipped",
    "refusal_flip": "refusal appeared or went",
    "sentiment_flip": "sentiment changed sign",
}
DIFFERENCE_MEASURES = {  # signed: counterfactual minus original
    "length": "answer length (words)",
    "sentiment": "sentiment score",
    "task_metric": "task metric",
    "judge": "judge rubric score (1-5)",
}

_WORD = re.compile(r"[a-z']+")


@cache
def word_list(name: str) -> frozenset[str]:
    """A word list of the shipped `lexicon.yaml`: positive, negative or function_words."""
    text = resources.files("tunesmith.audit").joinpath("lexicon.yaml").read_text(encoding="utf-8")
    return frozenset(str(word) for word in yaml.safe_load(text)[name])


def sentiment(text: str) -> float:
    """(positive - negative lexicon words) / words; 0 for an empty text."""
    words = _WORD.findall(text.lower())
    if not words:
        return 0.0
    positive, negative = word_list("positive"), word_list("negative")
    return (sum(w in positive for w in words) - sum(w in negative for w in words)) / len(words)


def label_flip(original: str, counterfactual: str) -> float:
    return float(original != counterfactual)


def generation_measures(original: str, counterfactual: str) -> dict[str, float]:
    """The text measures of one pair of answers (the task metric and judge are added by the caller)."""
    before, after = sentiment(original), sentiment(counterfactual)
    return {
        "refusal_flip": float(is_refusal(original) != is_refusal(counterfactual)),
        "sentiment_flip": float((before > 0) - (before < 0) != (after > 0) - (after < 0)),
        "length": float(len(counterfactual.split()) - len(original.split())),
        "sentiment": after - before,
    }
