"""The bookkeeping of `prepare_data`: step logs, reading + validating inputs, and the report's numbers.

Owns: `StepLog` (rows in and out, every removed row with its reason, counts of changed rows, a few
samples for the report), `read_inputs` (every input file or folder through `ingest`, one form for
all, group keys, `on_error` fail or skip) and `build_report`. Does not own: the cleaning, dedup,
split and leakage steps (see `prepare`) or the HTML (see `report`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tunesmith.config import DataFormat
from tunesmith.data.ingest import iter_records
from tunesmith.data.records import DataError, DataProblem
from tunesmith.data.rows import PrepRow, RowKind, to_prep_row
from tunesmith.data.split import SPLITS

MAX_SAMPLES = 5  # removed or changed rows shown with their text per step


class StepLog:
    """What one step did: rows in and out, removed rows with reasons, changed-row counts, samples."""

    def __init__(self, name: str, params: dict[str, Any], rows_in: int) -> None:
        self.name = name
        self.params = params
        self.rows_in = rows_in
        self.rows_out = rows_in
        self.removed: list[dict[str, str]] = []
        self.changed: Counter[str] = Counter()
        self.samples: list[dict[str, str]] = []
        self.details: dict[str, Any] = {}

    def remove(self, row: PrepRow | None, reason: str, *, kind: str = "", source: str = "") -> None:
        """Log a removed row; `kind` groups reasons that name other rows ("exact duplicate")."""
        where = row.source if row is not None else source
        self.removed.append({"source": where, "reason": reason, "kind": kind or reason})
        if row is not None:
            self.sample(row, reason)

    def sample(self, row: PrepRow, note: str) -> None:
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append({"source": row.source, "reason": note, "text": row.full_text()[:400]})

    def done(self, rows_out: int) -> StepLog:
        self.rows_out = rows_out
        return self

    def reasons(self) -> dict[str, int]:
        """Removed rows per kind of reason."""
        counts: Counter[str] = Counter(entry["kind"] for entry in self.removed)
        return dict(counts.most_common())

    def summary(self) -> dict[str, Any]:
        """Name, parameters and counts: the step's entry in the dataset's lineage."""
        return {
            "name": self.name,
            "params": self.params,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "changed": dict(self.changed),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "removed": self.removed,
            "removed_by_reason": self.reasons(),
            "samples": self.samples,
            **({"details": self.details} if self.details else {}),
        }


def read_inputs(
    inputs: list[Path],
    data_format: DataFormat | None,
    column_map: Mapping[str, str],
    instruction: str,
    group_by: str | None,
    on_error: str,
    progress: Callable[[str], None],
) -> tuple[list[PrepRow], StepLog, list[int]]:
    """Every valid row of every input, the validation log, and rows read per input.

    Raises:
        DataError: with `on_error="fail"`, every invalid row; in any mode, when no valid row is left.
    """
    problems: list[DataProblem] = []
    per_input: list[int] = []
    rows = list(
        iter_valid_rows(inputs, data_format, column_map, instruction, group_by, problems, per_input, progress)
    )
    log = validate_log(inputs, data_format, on_error, problems, per_input, len(rows))
    return rows, log, per_input


def iter_valid_rows(
    inputs: list[Path],
    data_format: DataFormat | None,
    column_map: Mapping[str, str],
    instruction: str,
    group_by: str | None,
    problems: list[DataProblem],
    per_input: list[int],
    progress: Callable[[str], None],
) -> Iterator[PrepRow]:
    """Every valid row of every input, one at a time; invalid ones are appended to `problems`, and the
    rows read per input to `per_input` (once an input is read to its end)."""
    kind: RowKind | None = None
    for path in inputs:
        count = 0
        for location, raw, item in iter_records(
            path, data_format, instruction=instruction, column_map=column_map
        ):
            count += 1
            if count % 10_000 == 0:
                progress(f"reading and validating {path.name}: {count:,} rows")
            problem = item if isinstance(item, DataProblem) else None
            if problem is None and group_by is not None and (raw is None or raw.get(group_by) is None):
                problem = DataProblem(location, f"missing group key '{group_by}' (--group-by)")
            if problem is None and not isinstance(item, DataProblem):
                group = str(raw[group_by]) if group_by is not None else None
                row = to_prep_row(item, raw, instruction, group)
                kind = kind or row.kind
                if row.kind is not kind:
                    problem = DataProblem(location, f"a {row.kind.value} row among {kind.value} rows")
                else:
                    yield row
            if problem is not None:
                problems.append(_with_input(problem, path, inputs))
        per_input.append(count)


def validate_log(
    inputs: list[Path],
    data_format: DataFormat | None,
    on_error: str,
    problems: list[DataProblem],
    per_input: list[int],
    valid: int,
) -> StepLog:
    """The validation step's log once every input is read.

    Raises:
        DataError: with `on_error="fail"`, every invalid row; in any mode, when no valid row is left.
    """
    log = StepLog("validate", {"on_error": on_error, "format": data_format}, sum(per_input))
    if problems and on_error == "fail":
        raise DataError(problems)
    for problem in problems:
        log.remove(None, problem.message, source=problem.location)
    if not valid:
        raise DataError(problems or [DataProblem(", ".join(map(str, inputs)), "no examples in the input")])
    return log.done(valid)


def _with_input(problem: DataProblem, path: Path, inputs: list[Path]) -> DataProblem:
    """Locations name the file; with several inputs of the same name, the folder tells them apart."""
    if len({p.name for p in inputs}) == len(inputs):
        return problem
    return DataProblem(f"{path.parent.name}/{problem.location}", problem.message)


def build_report(
    rows: list[PrepRow],
    assigned: list[str],
    logs: list[StepLog],
    total_tokens: npt.NDArray[np.int64],
    loss_tokens: npt.NDArray[np.int64],
    context: int | None,
    max_tokens: int | None,
    estimate: dict[str, Any],
) -> dict[str, Any]:
    """The numbers of report.json: steps, splits, token statistics, labels, turns and the estimate."""
    labels: dict[str, dict[str, int]] = {}
    turns: Counter[int] = Counter()
    for row, split in zip(rows, assigned, strict=True):
        count_row(row, split, labels, turns)
    return report_numbers(
        rows[0].kind, assigned, logs, labels, turns, total_tokens, loss_tokens, context, max_tokens, estimate
    )


def count_row(row: PrepRow, split: str, labels: dict[str, dict[str, int]], turns: Counter[int]) -> None:
    """Add a kept row to the report's label counts per split and its chats' turn counts."""
    count_kept(row.kind, row.label(), chat_turns(row), split, labels, turns)


def chat_turns(row: PrepRow) -> int:
    """The turns of a chat row that the report counts (system prompts are not turns)."""
    return sum(1 for role in row.roles if role != "system")


def count_kept(
    kind: RowKind,
    label: str | None,
    turn_count: int,
    split: str,
    labels: dict[str, dict[str, int]],
    turns: Counter[int],
) -> None:
    """`count_row` from a row's label and `chat_turns`, when the row itself is not in memory."""
    if kind is RowKind.classification:
        counts = labels.setdefault(str(label), dict.fromkeys(SPLITS, 0))
        counts[split] += 1
    elif kind is RowKind.chat:
        turns[turn_count] += 1


def report_numbers(
    kind: RowKind,
    assigned: list[str],
    logs: list[StepLog],
    labels: dict[str, dict[str, int]],
    turns: Counter[int],
    total_tokens: npt.NDArray[np.int64],
    loss_tokens: npt.NDArray[np.int64],
    context: int | None,
    max_tokens: int | None,
    estimate: dict[str, Any],
) -> dict[str, Any]:
    """`build_report` from counts gathered row by row (`count_row`): no rows kept in memory."""
    splits = {name: assigned.count(name) for name in SPLITS}
    histogram, edges = np.histogram(total_tokens, bins=40)
    return {
        "kind": kind.value,
        "steps": [log.to_json() for log in logs],
        "splits": splits,
        "tokens": {
            "histogram": {"counts": histogram.tolist(), "edges": edges.tolist()},
            "total": int(total_tokens.sum()),
            "loss_bearing": int(loss_tokens.sum()),
            "loss_share": float(loss_tokens.sum() / max(int(total_tokens.sum()), 1)),
            "context_length": context,
            "max_tokens": max_tokens,
            "mean": float(total_tokens.mean()),
            "p50": float(np.percentile(total_tokens, 50)),
            "p95": float(np.percentile(total_tokens, 95)),
            "max": int(total_tokens.max()),
        },
        "labels": labels,
        "turns": {str(n): turns[n] for n in sorted(turns)},
        "estimate": estimate,
    }
