"""METEOR 1.5 and CIDEr-D exactly as the COCO caption evaluation computes them (PyPI `pycocoevalcap`).

Owns: calling the reference implementations and shaping their output as `metrics.Metric`
statistics. METEOR runs the original Java jar (with its paraphrase tables), so it needs a Java
runtime; both need the optional extra `tunesmith[meteor]`. Missing pieces raise
`MetricUnavailableError` saying what to install. Does not own: the other metrics.

Statistics: each example's own score (METEOR's segment score, CIDEr-D's per-example score). CIDEr-D's
corpus value is the mean of its per-example scores. METEOR's corpus value is the jar's aggregate
over all segments (not a mean), so its segment scores are shifted onto that aggregate before
resampling (see `meteor_statistics`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence

import numpy as np

from tunesmith.config import ConfigError
from tunesmith.eval.metrics import Metric, References, mean_of_first, normalize_space
from tunesmith.eval.metrics import _check as check_pairs

_INSTALL = "install the extra: pip install 'tunesmith[meteor]'"


class MetricUnavailableError(ConfigError):
    """A metric was asked for whose software is not installed; the message says what to install.

    A `ConfigError`, so the CLI reports it as one line (exit 2) like any other unusable setting.
    """


def _require_package() -> None:
    try:
        import pycocoevalcap  # noqa: F401
    except ImportError as error:
        raise MetricUnavailableError(
            f"METEOR and CIDEr need the package pycocoevalcap; {_INSTALL}"
        ) from error


def require_java() -> str:
    """The `java` executable METEOR runs, or a clear error."""
    java = shutil.which("java")
    if java is None:
        raise MetricUnavailableError(
            "METEOR runs the reference Java implementation and no `java` is on PATH; install a Java "
            "runtime (e.g. `apt-get install default-jre-headless` or `brew install openjdk`), or drop "
            "'meteor' from the metrics"
        )
    return java


def check_available(names: Sequence[str]) -> None:
    """Fail before any model runs when a requested COCO metric cannot be computed here."""
    if {"meteor", "cider"} & set(names):
        _require_package()
    if "meteor" in names:
        require_java()


def _tokenize(text: str) -> str:
    # METEOR normalises itself (-norm); CIDEr splits on spaces, so punctuation becomes its own token.
    return normalize_space("".join(_split_punctuation(text.lower())))


def _split_punctuation(text: str) -> list[str]:
    out: list[str] = []
    for char in text:
        out.append(f" {char} " if not (char.isalnum() or char.isspace() or char in "'-") else char)
    return out


def _inputs(
    predictions: Sequence[str], references: References
) -> tuple[dict[int, list[str]], dict[int, list[str]]]:
    check_pairs(predictions, references)
    refs = {index: [_tokenize(ref) for ref in group] for index, group in enumerate(references)}
    # The jar cannot score an empty segment; a lone "." scores 0 like an empty answer should.
    hyps = {index: [_tokenize(prediction) or "."] for index, prediction in enumerate(predictions)}
    return refs, hyps


def meteor_scores(predictions: Sequence[str], references: References) -> tuple[float, np.ndarray]:
    """The jar's corpus METEOR and its per-example segment scores."""
    _require_package()
    require_java()
    from pycocoevalcap.meteor.meteor import Meteor

    refs, hyps = _inputs(predictions, references)
    scorer = Meteor()
    try:
        corpus, segments = scorer.compute_score(refs, hyps)
    finally:
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return float(corpus), np.asarray(segments, dtype=float)


def meteor_statistics(predictions: Sequence[str], references: References) -> np.ndarray:
    """Per-example METEOR segment scores, offset so that their mean is the jar's corpus score.

    The offset (corpus score minus mean segment score) is the same for every row, so the full set
    aggregates to exactly the reference value and a resample varies as its segment scores do.
    """
    corpus, segments = meteor_scores(predictions, references)
    shifted: np.ndarray = (segments + (corpus - segments.mean())).reshape(-1, 1)
    return shifted


def cider_statistics(predictions: Sequence[str], references: References) -> np.ndarray:
    """Per-example CIDEr-D (document frequencies from this set's references), scale as COCO (0–10)."""
    _require_package()
    from pycocoevalcap.cider.cider import Cider

    refs, hyps = _inputs(predictions, references)
    _, scores = Cider().compute_score(refs, hyps)
    return np.asarray(scores, dtype=float).reshape(-1, 1)


COCO_METRICS: dict[str, Metric] = {
    "meteor": Metric("meteor", meteor_statistics, mean_of_first),
    "cider": Metric("cider", cider_statistics, mean_of_first),
}
