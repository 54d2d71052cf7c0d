"""Where a run's validation examples come from, whatever its objective. No torch.

Owns: the rule (the `val_data` file; else a prepared dataset folder's val split; else, by default, a
seeded share of the training data held out, stratified by label where there are labels; `--no-val`:
none) and the record of which one a run used (`ValidationSource`, in `run.json`). Does not own: how
many examples are held out (`tunesmith.data.split.held_out_indices`), reading files, or validating (the
loop).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from tunesmith.config import TrainSpec
from tunesmith.data.ingest import is_prepared_dataset
from tunesmith.data.split import held_out_indices, min_examples_to_hold_out
from tunesmith.train.rundir import EventType, RunDir

ItemT = TypeVar("ItemT")


class ValidationSource(StrEnum):
    """What a run validated on."""

    val_data = "val_data"  # the file given as val_data
    prepared_split = "prepared_split"  # the val split of the prepared dataset folder given as data
    held_out = (
        "held_out"  # a seeded share of the training data, held out because no validation data was given
    )
    none = "none"  # no validation: --no-val, or too few training examples to hold any out


def validation_file(spec: TrainSpec) -> tuple[Path | None, ValidationSource]:
    """The data to read the validation split from, if any, and the source it stands for.

    Without a file (None), the source says whether to hold examples out (`held_out`) or not (`none`).
    """
    if spec.val_data is not None:
        return spec.val_data, ValidationSource.val_data
    if is_prepared_dataset(spec.data):
        return spec.data, ValidationSource.prepared_split
    return None, ValidationSource.held_out if spec.hold_out_val else ValidationSource.none


def hold_out(
    run: RunDir, items: list[ItemT], labels: Sequence[str] | None, seed: int
) -> tuple[list[ItemT], list[ItemT], ValidationSource]:
    """The training items split into (train, validation), and the source that describes the split.

    `labels`: each item's label, to hold out the same share of every label (None: not stratified).
    Too few items to spare any leave them all to training, with a warning.
    """
    chosen = set(held_out_indices(len(items), seed, labels))
    if not chosen:
        run.emit(
            EventType.warning,
            f"no validation: {len(items)} training example(s) are too few to hold any out (it takes "
            f"{min_examples_to_hold_out()}); give val_data for early stopping and the best checkpoint",
        )
        return items, [], ValidationSource.none
    stratified = ", stratified by label" if labels is not None else ""
    run.emit(
        EventType.validating_data,
        f"no validation data: holding out {len(chosen)} of {len(items)} training examples for validation "
        f"({len(chosen) / len(items):.0%}{stratified}, seed {seed}); --no-val trains on all of them without validation",
        held_out=len(chosen),
        stratified=labels is not None,
    )
    train = [item for index, item in enumerate(items) if index not in chosen]
    validation = [item for index, item in enumerate(items) if index in chosen]
    return train, validation, ValidationSource.held_out
