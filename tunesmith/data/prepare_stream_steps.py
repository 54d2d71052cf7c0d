"""The global steps of `prepare_stream` on keys alone: near-dedup, the length filter, the leakage check.

Owns: `prepare`'s near-dedup, length and leakage steps rewritten to work on what `prepare_stream` keeps
in memory (MinHash signatures, token counts, source names, splits) instead of rows, with the same
decisions, reasons and clusters; the texts their report samples show are read from the spill in a later
pass (`remove_later` notes which, `fill_samples` adds them). Does not own: the passes over rows (see
`prepare_stream`) or the similarity functions (see `dedup`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tunesmith.data import dedup
from tunesmith.data.prepare_steps import MAX_SAMPLES, StepLog
from tunesmith.data.rows import PrepRow
from tunesmith.data.split import SPLITS

Mask = npt.NDArray[np.bool_]
Pending = list[tuple[int, str]]  # (row index, reason) of a step's samples, texts read in a later pass


def remove_later(
    log: StepLog, pending: dict[str, Pending], index: int, source: str, reason: str, kind: str
) -> None:
    """`StepLog.remove` for a row whose text is not in memory: its sample's text is read in a later pass."""
    log.remove(None, reason, kind=kind, source=source)
    samples = pending.setdefault(log.name, [])
    if len(samples) < MAX_SAMPLES:
        samples.append((index, reason))


def fill_samples(log: StepLog, samples: Pending, texts: dict[int, PrepRow]) -> None:
    for index, reason in samples:
        log.sample(texts[index], reason)


def near_dedup(
    signatures: dedup.Signatures,
    sources: list[str],
    threshold: float,
    alive: Mask,
    pending: dict[str, Pending],
) -> tuple[StepLog, list[dict[str, Any]]]:
    """`prepare._near_dedup` on signatures alone: cluster members' texts are filled in by the prompt pass."""
    log = StepLog("near_dedup", {"threshold": threshold, "method": "MinHash/LSH, word 3-grams"}, len(sources))
    report: list[dict[str, Any]] = []
    for cluster in dedup.resolve_clusters(signatures, threshold):
        members, kept = cluster.members, cluster.kept
        for index, like, score in cluster.removed:
            alive[index] = False
            reason = f"near-duplicate of {sources[like]} (Jaccard ≈ {score:.2f})"
            remove_later(log, pending, index, sources[index], reason, "near-duplicate")
        report.append(
            {
                "size": len(members),
                "kept": ", ".join(sources[i] for i in kept[:5]),
                "members": [{"source": sources[i], "text": i} for i in members[:5]],
            }
        )
    report.sort(key=lambda cluster: -cluster["size"])
    return log.done(int(alive.sum())), report[:20]


def length_filter(
    total: npt.NDArray[np.int64],
    min_tokens: int,
    max_tokens: int | None,
    sources: list[str],
    alive: Mask,
    pending: dict[str, Pending],
) -> StepLog:
    log = StepLog("length", {"min_tokens": min_tokens, "max_tokens": max_tokens}, int(alive.sum()))
    keep = total >= min_tokens
    if max_tokens is not None:
        keep &= total <= max_tokens
    for index in np.nonzero(alive & ~keep)[0].tolist():
        bound = f"< min {min_tokens}" if total[index] < min_tokens else f"> max {max_tokens}"
        remove_later(
            log, pending, index, sources[index], f"{int(total[index])} tokens {bound}", f"tokens {bound}"
        )
    alive &= keep
    return log.done(int(alive.sum()))


def leakage(
    signatures: dedup.Signatures,
    indices: npt.NDArray[np.int64],
    assigned: list[str],
    sources: list[str],
    threshold: float,
    pending: dict[str, Pending],
) -> tuple[StepLog, list[dict[str, Any]], Mask]:
    """`prepare._leakage` on prompt signatures of the rows left (`indices`: their rows in the spill)."""
    log = StepLog("leakage", {"threshold": threshold, "compares": "prompts (model input)"}, len(indices))
    groups = dedup.clusters(len(indices), dedup.candidate_pairs(signatures, threshold))
    order = {name: rank for rank, name in enumerate(SPLITS)}
    keep = np.ones(len(indices), dtype=bool)
    leaks = []
    for members in groups:
        # The cluster's earliest split keeps its rows; the same prompt in a later split is a leak.
        first = min(members, key=lambda i: (order[assigned[i]], i))
        later = [i for i in members if order[assigned[i]] > order[assigned[first]]]
        if not later:
            continue
        scores = dedup.similarity(signatures[later], signatures[[first] * len(later)]).tolist()
        matched = sources[int(indices[first])]
        for index, score in zip(later, scores, strict=True):
            keep[index] = False
            row = int(indices[index])
            reason = f"{assigned[index]} prompt near-duplicates {assigned[first]} row {matched}"
            kind = f"{assigned[index]} leaks from {assigned[first]}"
            remove_later(log, pending, row, sources[row], f"{reason} (Jaccard ≈ {score:.2f})", kind)
            leaks.append(
                {
                    "removed": sources[row],
                    "from": assigned[index],
                    "matches": matched,
                    "in": assigned[first],
                    "similarity": round(score, 3),
                }
            )
    return log.done(int(keep.sum())), leaks, keep
