"""Task metrics as per-example statistics plus an aggregate, built on the reference packages.

Owns: ROUGE-1/2/L (rouge-score, the Google Research implementation), corpus BLEU and chrF
(sacrebleu), exact match, SQuAD-style normalised exact match and token F1, the numeric-answer match
(`#### 42`), and the classification metrics (accuracy, macro precision/recall/F1, per-class table,
confusion matrix; with an out-of-scope label, in-scope accuracy and out-of-scope recall). Every metric is split in two: `statistics` gives one row of sufficient
statistics per example, `aggregate` turns any subset of rows into the metric. That split is what lets
`stats` resample examples for confidence intervals and paired tests, corpus metrics (BLEU, chrF)
included. Scales follow each metric's convention: ROUGE, F1, accuracy and matches in [0, 1], BLEU and
chrF in [0, 100]. Multiple references per example are supported everywhere (ROUGE and the matches
take the best reference, BLEU and chrF use them all). METEOR and CIDEr live in `coco`.
Does not own: generation, label scoring or reporting.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.metrics.chrf import CHRF

References = Sequence[Sequence[str]]  # one or more references per example

_SPACE = re.compile(r"\s+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_MARKED_NUMBER = re.compile(r"####\s*(-?[\d,]*\.?\d+)")


@dataclass(frozen=True)
class Metric:
    """A metric as per-example sufficient statistics and the function that aggregates any subset."""

    name: str
    statistics: Callable[[Sequence[str], References], np.ndarray]  # (N, K)
    aggregate: Callable[[np.ndarray], float]

    def score(self, predictions: Sequence[str], references: References) -> float:
        """The metric over the whole set."""
        return self.aggregate(self.statistics(predictions, references))


def normalize_space(text: str) -> str:
    """Collapse runs of whitespace and trim; case and punctuation are kept (they are part of a voice)."""
    return _SPACE.sub(" ", text).strip()


def normalize_answer(text: str) -> str:
    """SQuAD answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(char for char in text.lower() if char not in string.punctuation)
    return normalize_space(_ARTICLES.sub(" ", text))


def extract_number(text: str) -> float | None:
    """The answer number: the one after `####` when present, else the last number in the text."""
    marked = _MARKED_NUMBER.search(text)
    found = marked.group(1) if marked else (_NUMBER.findall(text) or [None])[-1]
    if found is None:
        return None
    try:
        return float(found.replace(",", ""))
    except ValueError:
        return None


def is_numeric_reference(text: str) -> bool:
    """True when a reference ends with a GSM8K-style marked answer (`#### 42`)."""
    return _MARKED_NUMBER.search(text.strip().splitlines()[-1] if text.strip() else "") is not None


# ---------------------------------------------------------------------------------------- statistics


def _check(predictions: Sequence[str], references: References) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("no predictions to score")
    if any(not refs for refs in references):
        raise ValueError("every example needs at least one reference")


def _rouge(kind: str) -> Callable[[Sequence[str], References], np.ndarray]:
    def statistics(predictions: Sequence[str], references: References) -> np.ndarray:
        _check(predictions, references)
        scorer = rouge_scorer.RougeScorer([kind], use_stemmer=True)
        return np.array(
            [
                [scorer.score_multi(list(refs), prediction)[kind].fmeasure]
                for prediction, refs in zip(predictions, references, strict=True)
            ]
        )

    return statistics


def _ref_streams(references: References) -> list[list[str | None]]:
    """sacrebleu's layout: one stream per reference slot, None where an example has fewer references."""
    width = max(len(refs) for refs in references)
    return [[refs[slot] if slot < len(refs) else None for refs in references] for slot in range(width)]


def _sacrebleu(make: Callable[[], BLEU | CHRF]) -> tuple[Callable[..., np.ndarray], Callable[..., float]]:
    # sacrebleu's own significance tests resample these per-sentence statistics the same way.
    def statistics(predictions: Sequence[str], references: References) -> np.ndarray:
        _check(predictions, references)
        metric = make()
        streams: Any = _ref_streams(references)  # sacrebleu accepts None for a missing reference
        return np.array(metric._extract_corpus_statistics(list(predictions), streams))

    def aggregate(stats: np.ndarray) -> float:
        return float(make()._compute_score_from_stats(stats.sum(axis=0).tolist()).score)

    return statistics, aggregate


def _matches(normalize: Callable[[str], str]) -> Callable[[Sequence[str], References], np.ndarray]:
    def statistics(predictions: Sequence[str], references: References) -> np.ndarray:
        _check(predictions, references)
        return np.array(
            [
                [float(any(normalize(prediction) == normalize(ref) for ref in refs))]
                for prediction, refs in zip(predictions, references, strict=True)
            ]
        )

    return statistics


def token_f1_statistics(predictions: Sequence[str], references: References) -> np.ndarray:
    """SQuAD token F1 per example (best reference), on normalised answers."""
    _check(predictions, references)
    return np.array(
        [
            [max(_token_f1(prediction, ref) for ref in refs)]
            for prediction, refs in zip(predictions, references, strict=True)
        ]
    )


def _token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def numeric_statistics(predictions: Sequence[str], references: References) -> np.ndarray:
    """1 where the prediction's answer number equals a reference's (`####` answer, else last number)."""
    _check(predictions, references)
    rows = []
    for prediction, refs in zip(predictions, references, strict=True):
        got = extract_number(prediction)
        rows.append([float(got is not None and any(got == extract_number(ref) for ref in refs))])
    return np.array(rows)


def mean_of_first(stats: np.ndarray) -> float:
    """The aggregate of per-example scores: their mean."""
    return float(stats[:, 0].mean())


_bleu_statistics, _bleu_aggregate = _sacrebleu(BLEU)
_chrf_statistics, _chrf_aggregate = _sacrebleu(CHRF)

GENERATION_METRICS: dict[str, Metric] = {
    "rouge_1": Metric("rouge_1", _rouge("rouge1"), mean_of_first),
    "rouge_2": Metric("rouge_2", _rouge("rouge2"), mean_of_first),
    "rouge_l": Metric("rouge_l", _rouge("rougeL"), mean_of_first),
    "bleu": Metric("bleu", _bleu_statistics, _bleu_aggregate),
    "chrf": Metric("chrf", _chrf_statistics, _chrf_aggregate),
    "exact_match": Metric("exact_match", _matches(normalize_space), mean_of_first),
}
QA_METRICS: dict[str, Metric] = {
    "exact_match": Metric("exact_match", _matches(normalize_answer), mean_of_first),
    "token_f1": Metric("token_f1", token_f1_statistics, mean_of_first),
}
NUMERIC_METRICS: dict[str, Metric] = {
    "numeric_match": Metric("numeric_match", numeric_statistics, mean_of_first),
}


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F1 (longest common subsequence, Porter-stemmed tokens), one reference each."""
    return GENERATION_METRICS["rouge_l"].score(predictions, [[ref] for ref in references])


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenizer, no smoothing beyond its default), 0–100."""
    return GENERATION_METRICS["bleu"].score(predictions, [[ref] for ref in references])


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference after whitespace normalisation."""
    return GENERATION_METRICS["exact_match"].score(predictions, [[ref] for ref in references])


# ------------------------------------------------------------------------------------ classification


def classification_statistics(gold: Sequence[int], predicted: Sequence[int]) -> np.ndarray:
    """One row per example: (gold label index, predicted label index)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(predicted)} predictions for {len(gold)} gold labels")
    if not gold:
        raise ValueError("no predictions to score")
    return np.array([gold, predicted], dtype=np.int64).T


def confusion_matrix(stats: np.ndarray, num_labels: int) -> np.ndarray:
    """counts[gold, predicted]."""
    flat = stats[:, 0] * num_labels + stats[:, 1]
    return np.bincount(flat, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def per_class(stats: np.ndarray, num_labels: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per label (0 where undefined, as scikit-learn's zero_division=0)."""
    counts = confusion_matrix(stats, num_labels)
    true_positive = np.diag(counts).astype(float)
    predicted, support = counts.sum(axis=0), counts.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(num_labels), where=predicted > 0)
    recall = np.divide(true_positive, support, out=np.zeros(num_labels), where=support > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros(num_labels), where=total > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(num_labels: int) -> dict[str, Callable[[np.ndarray], float]]:
    """Aggregates over (gold, predicted) rows.

    Macro averages run over the labels that occur as gold or prediction in the rows, as
    scikit-learn's `f1_score(average="macro")` does by default.
    """

    def macro(key: str) -> Callable[[np.ndarray], float]:
        def aggregate(stats: np.ndarray) -> float:
            table = per_class(stats, num_labels)
            present = np.bincount(stats.ravel(), minlength=num_labels) > 0
            return float(table[key][present].mean())

        return aggregate

    return {
        "accuracy": lambda stats: float((stats[:, 0] == stats[:, 1]).mean()),
        "macro_precision": macro("precision"),
        "macro_recall": macro("recall"),
        "macro_f1": macro("f1"),
    }


def out_of_scope_metrics(out_of_scope: int) -> dict[str, Callable[[np.ndarray], float]]:
    """In-scope accuracy and out-of-scope recall over (gold, predicted) rows, as the CLINC150 paper reports.

    In-scope accuracy: of the examples whose gold label is a class, the share predicted as that class (an
    out-of-scope prediction is wrong). Out-of-scope recall: of the examples whose gold label is
    `out_of_scope` (an index), the share predicted out of scope. 0 over rows that hold none of them.
    """

    def in_scope_accuracy(stats: np.ndarray) -> float:
        rows = stats[stats[:, 0] != out_of_scope]
        return float((rows[:, 0] == rows[:, 1]).mean()) if len(rows) else 0.0

    def out_of_scope_recall(stats: np.ndarray) -> float:
        rows = stats[stats[:, 0] == out_of_scope]
        return float((rows[:, 1] == out_of_scope).mean()) if len(rows) else 0.0

    return {"in_scope_accuracy": in_scope_accuracy, "out_of_scope_recall": out_of_scope_recall}
