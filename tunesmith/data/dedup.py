"""Exact and near-duplicate detection: normalised-text hashes, MinHash signatures and LSH banding.

Owns: the exact-duplicate key, vectorised MinHash signatures (one-permutation hashing over word
3-grams: one hash per shingle, so the cost is linear in the text, not in the number of permutations),
LSH banding with verification, and clustering near-duplicate rows. Does not own: which text of a
record is compared, or what is done with a cluster (see `prepare`).
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

NUM_BINS = 64  # signature length: 64 bins of one-permutation MinHash
SHINGLE_WORDS = 3
_EMPTY = np.uint32(0xFFFFFFFF)  # a bin no shingle fell into
# Punctuation becomes a space, so "word." and "word" are one word (cheaper than a \w+ regex).
_PUNCTUATION = str.maketrans({char: " " for char in string.punctuation})
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_CACHE_LIMIT = 1_000_000  # words whose hashes are kept; the cache starts over past it

Signatures = npt.NDArray[np.uint32]  # (rows, NUM_BINS)


def exact_key(text: str) -> bytes:
    """Hash of the text after case folding and whitespace collapsing: equal keys are exact duplicates."""
    normalised = " ".join(text.casefold().split())
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


def _mix(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 finaliser: a well-spread deterministic 64-bit hash of 64-bit integers."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class MinHasher:
    """Turns texts into MinHash signatures. A word's hash depends on the word and the seed alone, so a
    text's signature is the same whatever was signed before it, in whichever process."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._word_hashes: dict[str, int] = {}  # a cache: blake2b of each word seen

    def signatures(self, texts: Sequence[str], chunk: int = 2048) -> Signatures:
        """One row of `NUM_BINS` uint32 per text (empty bins hold 0xFFFFFFFF)."""
        out = np.full((len(texts), NUM_BINS), _EMPTY, dtype=np.uint32)
        for start in range(0, len(texts), chunk):
            out[start : start + chunk] = self._chunk(texts[start : start + chunk])
        return out

    def _hashes(self, words: list[str]) -> list[int]:
        cache = self._word_hashes
        if not all(map(cache.__contains__, words)):
            if len(cache) > _CACHE_LIMIT:
                cache.clear()
            for word in [word for word in dict.fromkeys(words) if word not in cache]:
                digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
                cache[word] = int.from_bytes(digest, "little")
        return list(map(cache.__getitem__, words))

    def _chunk(self, texts: Sequence[str]) -> Signatures:
        words: list[str] = []
        owners: list[int] = []
        for row, text in enumerate(texts):
            text_words = text.casefold().translate(_PUNCTUATION).split()
            # A text shorter than one shingle is one shingle; word ids are padded so it still hashes.
            text_words += [""] * max(0, SHINGLE_WORDS - len(text_words))
            words.extend(text_words)
            owners.extend([row] * len(text_words))
        with np.errstate(over="ignore"):
            hashed = np.asarray(self._hashes(words), dtype=np.uint64) + np.uint64(self.seed)
        word_hash = _mix(hashed)
        owner = np.asarray(owners, dtype=np.int64)
        # Shingle i covers words i..i+2 of the same text.
        valid = owner[: -SHINGLE_WORDS + 1] == owner[SHINGLE_WORDS - 1 :]
        with np.errstate(over="ignore"):
            shingle = word_hash[: -SHINGLE_WORDS + 1].copy()
            for offset in range(1, SHINGLE_WORDS):
                shingle = shingle * np.uint64(0x100000001B3) ^ word_hash[offset : len(word_hash) - 2 + offset]
        shingle = _mix(shingle[valid])
        owner = owner[: -SHINGLE_WORDS + 1][valid]
        bins = (shingle >> np.uint64(58)).astype(np.int64)  # top 6 bits pick one of 64 bins
        values = (shingle & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        signature = np.full(len(texts) * NUM_BINS, _EMPTY, dtype=np.uint32)
        np.minimum.at(signature, owner * NUM_BINS + bins, values)
        return signature.reshape(len(texts), NUM_BINS)


def similarity(left: Signatures, right: Signatures) -> npt.NDArray[np.float64]:
    """Estimated Jaccard similarity of paired rows: agreeing bins among bins either text filled."""
    filled = (left != _EMPTY) | (right != _EMPTY)
    agree = (left == right) & filled
    ratio: npt.NDArray[np.float64] = agree.sum(axis=1) / np.maximum(filled.sum(axis=1), 1)
    return ratio


def band_rows(threshold: float) -> int:
    """Rows per LSH band: the most that still finds a pair at `threshold` with probability ≥ 0.99."""
    best = 1
    for rows in (1, 2, 4, 8, 16):
        bands = NUM_BINS // rows
        if 1 - (1 - threshold**rows) ** bands >= 0.99:
            best = rows
    return best


def candidate_pairs(signatures: Signatures, threshold: float) -> npt.NDArray[np.int64]:
    """Verified near-duplicate pairs `(i, j)`, `i < j`, with estimated Jaccard ≥ `threshold`."""
    rows = band_rows(threshold)
    found: list[npt.NDArray[np.int64]] = []
    multipliers = _mix(np.arange(1, rows + 1, dtype=np.uint64))
    for start in range(0, NUM_BINS, rows):
        band = signatures[:, start : start + rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            keys = (band * multipliers).sum(axis=1, dtype=np.uint64)
        keys[(band == np.uint64(_EMPTY)).all(axis=1)] = _MASK64  # an empty band says nothing
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        same = (sorted_keys[1:] == sorted_keys[:-1]) & (sorted_keys[1:] != _MASK64)
        if not same.any():
            continue
        # Compare each member of a bucket with the bucket's first member.
        run_start = np.maximum.accumulate(np.where(np.concatenate([[True], ~same]), np.arange(len(keys)), 0))
        members = np.nonzero(np.concatenate([[False], same]))[0]
        found.append(np.stack([order[run_start[members]], order[members]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.unique(np.sort(np.concatenate(found), axis=1), axis=0)
    keep = similarity(signatures[pairs[:, 0]], signatures[pairs[:, 1]]) >= threshold
    return pairs[keep]


def clusters(count: int, pairs: npt.NDArray[np.int64]) -> list[list[int]]:
    """Connected groups of rows (size ≥ 2), each sorted, ordered by their first row."""
    parent = list(range(count))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for left, right in pairs.tolist():
        a, b = root(left), root(right)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for node in sorted({int(n) for n in pairs.ravel()}):
        groups.setdefault(root(node), []).append(node)
    return sorted((members for members in groups.values() if len(members) > 1), key=lambda m: m[0])


@dataclass(frozen=True)
class Resolved:
    """A near-duplicate cluster resolved: the rows kept, and each removed row with the kept row it is
    like and their estimated Jaccard similarity."""

    members: list[int]
    kept: list[int]
    removed: list[tuple[int, int, float]]


def resolve_clusters(signatures: Signatures, threshold: float) -> list[Resolved]:
    """Near-duplicate clusters, each resolved greedily in input order: a row goes only if it is within
    `threshold` of a row kept before it (a chain a~b~c does not remove c for being like a when it is not)."""
    resolved = []
    for members in clusters(len(signatures), candidate_pairs(signatures, threshold)):
        kept, removed = [members[0]], []
        for index in members[1:]:
            scores = similarity(signatures[[index] * len(kept)], signatures[kept])
            best = int(scores.argmax())
            if scores[best] < threshold:
                kept.append(index)
            else:
                removed.append((index, kept[best], float(scores[best])))
        resolved.append(Resolved(members, kept, removed))
    return resolved
