"""Deterministic train/val/test assignment: plain, stratified by label, or grouped by a key. Pure.

Owns: turning split fractions into row counts and assigning every row to a split under a seed, and
how much of a training set `tunesmith train` holds out for validation when it is given none. Does not
own: the leakage check across splits (see `prepare`) or writing the splits.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

SPLITS = ("train", "val", "test")

# The validation split held out of training data given without one: about a tenth of it, but at least
# VAL_FLOOR examples (a mean loss over fewer moves more between validations from which examples they are
# than from training) as long as that is at most a fifth of the data, and at most VAL_CAP (more makes each
# validation slower without changing which step is best). Under VAL_MIN there is no validation at all.
VAL_SHARE = 0.1
VAL_FLOOR, VAL_FLOOR_SHARE = 32, 0.2
VAL_CAP = 256
VAL_MIN = 4


def parse_fractions(text: str) -> tuple[float, float, float]:
    """`"70/15/15"`, `"0.8,0.1,0.1"` or `"80/20"` (no test split) → fractions that sum to 1."""
    parts = [part for part in text.replace(",", "/").split("/") if part.strip()]
    try:
        values = [float(part) for part in parts]
    except ValueError as error:
        raise ValueError(f"--split {text!r}: expected numbers like 70/15/15") from error
    if len(values) not in (2, 3) or any(value < 0 for value in values) or sum(values) <= 0:
        raise ValueError(f"--split {text!r}: expected two or three non-negative numbers like 70/15/15")
    values += [0.0] * (3 - len(values))
    total = sum(values)
    return (values[0] / total, values[1] / total, values[2] / total)


def split_counts(count: int, fractions: Sequence[float]) -> list[int]:
    """Rows per split: val and test rounded, train takes the rest (one row stays in train)."""
    val = round(count * fractions[1])
    test = round(count * fractions[2])
    while val + test >= count and val + test > 0:
        if test >= val:
            test -= 1
        else:
            val -= 1
    return [count - val - test, val, test]


def assign_splits(
    count: int,
    fractions: Sequence[float],
    seed: int,
    *,
    labels: Sequence[str | None] | None = None,
    groups: Sequence[str | None] | None = None,
) -> list[str]:
    """The split of each of `count` rows: grouped when `groups`, else stratified when `labels`."""
    rng = random.Random(seed)
    assigned = [""] * count
    if groups is not None:
        _assign_groups(assigned, groups, fractions, rng)
        return assigned
    strata: dict[str | None, list[int]] = {}
    for index in range(count):
        strata.setdefault(labels[index] if labels is not None else None, []).append(index)
    for key in sorted(strata, key=str):
        members = strata[key]
        rng.shuffle(members)
        train, val, _ = split_counts(len(members), fractions)
        for position, index in enumerate(members):
            assigned[index] = SPLITS[0 if position < train else 1 if position < train + val else 2]
    return assigned


def _assign_groups(
    assigned: list[str], groups: Sequence[str | None], fractions: Sequence[float], rng: random.Random
) -> None:
    """Whole groups, in shuffled order, each to the split furthest below its target row count."""
    members: dict[str | None, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    order = sorted(members, key=str)
    rng.shuffle(order)
    targets = split_counts(len(groups), fractions)
    filled = [0, 0, 0]
    for group in order:
        deficits = [targets[i] - filled[i] for i in range(3)]
        choice = max(range(3), key=lambda i: (deficits[i], -i))
        filled[choice] += len(members[group])
        for index in members[group]:
            assigned[index] = SPLITS[choice]


def held_out_count(count: int) -> int:
    """Examples to hold out for validation from `count` training examples (0: too few to spare any)."""
    wanted = min(max(round(count * VAL_SHARE), min(VAL_FLOOR, int(count * VAL_FLOOR_SHARE))), VAL_CAP)
    return wanted if wanted >= VAL_MIN else 0


def min_examples_to_hold_out() -> int:
    """The fewest training examples a validation split is held out of."""
    return math.ceil(VAL_MIN / VAL_FLOOR_SHARE)


def held_out_indices(count: int, seed: int, labels: Sequence[str] | None = None) -> list[int]:
    """Which of `count` training examples to validate on: `held_out_count` of them, chosen under `seed`.

    With `labels`, every label gives the same share (rounded per label, so the total may differ a little,
    and a label's only example stays in training).
    """
    wanted = held_out_count(count)
    if wanted == 0:
        return []
    share = wanted / count
    assigned = assign_splits(count, (1 - share, share, 0.0), seed, labels=labels)
    return [index for index, split in enumerate(assigned) if split == "val"]
