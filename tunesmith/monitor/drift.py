"""Input drift: is a window of prompts drawn from the same distribution as a reference (the adapter's
training prompts, or an earlier window)? Pure numpy.

Owns: turning prompts into per-request vectors (hashed bag of words here; the base model's mean-pooled
hidden states come from `embed`, same test) and the two-sample permutation test on them. Does not own:
where the prompts come from (see `check`) or alerting.

Why a permutation test: each request is one exchangeable unit, so under "no drift" the p-value is
uniform whatever the window size, and alarming at p < 0.05 false-alarms 5% of the time at 100 or
10,000 requests alike. Tests on pooled token counts (chi-square, PSI thresholds) treat the tokens of
one prompt as independent draws; their false alarms grow with the window (evidentlyai/evidently#50).
Power comes from the statistic: the sum of fourth powers of the per-feature differences between the
two means, each feature scaled by its pooled spread. A new topic moves a few features a lot; squares
(a Hotelling-like distance) drown those few in the noise of the rest, fourth powers let them stand
out (10% of a window from unseen intents: power 0.69 with squares, 0.95 with fourth powers at 1,000
requests in the development runs; benchmarks/drift_calibration.py, figures in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import re
import zlib

import numpy as np
from numpy.typing import NDArray

__all__ = ["DRIFT_ALARM", "hashed_bag_of_words", "permutation_drift_test"]

DRIFT_ALARM = 0.05  # alarm when the drift p-value is below this: the false-alarm rate
_WORD = re.compile(r"\w+")


def hashed_bag_of_words(texts: list[str], dim: int = 1024) -> NDArray[np.float64]:
    """One row per text: its word counts hashed into `dim` buckets (crc32, so stable across runs),
    scaled to unit length so long prompts do not outweigh short ones."""
    features = np.zeros((len(texts), dim))
    for row, text in enumerate(texts):
        for word in _WORD.findall(text.lower()):
            features[row, zlib.crc32(word.encode()) % dim] += 1
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    result: NDArray[np.float64] = features / np.maximum(norms, 1e-12)
    return result


def permutation_drift_test(
    reference: NDArray[np.float64], window: NDArray[np.float64], permutations: int = 199, seed: int = 0
) -> tuple[float, float]:
    """(p-value, statistic) of "window and reference come from one distribution": the statistic's rank
    among `permutations` random relabellings of the pooled rows, (1 + #at least as large) / (1 + P)."""
    if len(reference) < 2 or len(window) < 2:
        raise ValueError("permutation_drift_test: reference and window need at least 2 rows each")
    pooled = np.concatenate([reference, window])
    pooled = (pooled - pooled.mean(axis=0)) / np.maximum(pooled.std(axis=0), 1e-12)
    total, size = len(pooled), len(window)
    rng = np.random.default_rng(seed)
    labels = np.zeros((permutations + 1, total))
    labels[0, len(reference) :] = 1  # row 0: the real split
    for row in range(1, permutations + 1):
        labels[row, rng.choice(total, size, replace=False)] = 1
    window_sums = labels @ pooled
    # pooled is centred: the reference mean is -window_sum / (total - size)
    differences = window_sums / size + window_sums / (total - size)
    statistics = np.sum(differences**4, axis=1)
    p_value = float((1 + np.sum(statistics[1:] >= statistics[0])) / (1 + permutations))
    return p_value, float(statistics[0])
