"""`prepare_data` for data beyond memory: the same steps in the same order, rows streamed through disk.

Owns: running the steps of `prepare` in passes over chunks of rows spilled to temporary files, so
memory grows only with what the global steps must keep per row (a source name, two MinHash signatures,
token counts, a split), never with the rows' text:

1. read and validate each row; fix it (clean's per-text fixes) and hash its lines for the boilerplate
   count;
2. remove boilerplate, empty rows and personal data; sign the rows for near-dedup and count their
   tokens; drop exact duplicates (hashes only);
3. (in memory, signatures only) near-dedup, the length filter and the split; then a pass signs the
   prompts of the rows left for the leakage check;
4. write the kept rows to their splits.

The per-row work of passes 1–3 runs in `num_proc` worker processes, a chunk at a time (see
`prepare_stream_rows`); everything that depends on the order of rows (which exact duplicate comes first,
near-dup resolution, the split, leakage) is decided here, in chunk order, so the output is the same for
any `num_proc`. What each step finds is exactly what `prepare`'s in-memory steps find on the same input
(a test holds them to the same dataset hash and report). The one approximation: boilerplate lines are
counted by 64-bit hash, not by text. Does not own: the checks themselves or their logs (see
`prepare`), nor the global steps' rewrites on keys (see `prepare_stream_steps`).
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tunesmith.config import PrepareSpec
from tunesmith.data import dedup, pii
from tunesmith.data.ingest import DEFAULT_INSTRUCTION
from tunesmith.data.output import input_sha256, write_dataset_rows
from tunesmith.data.prepare import (
    DatasetRegistry,
    PrepareResult,
    Progress,
    _clean_log,
    _estimate,
    _fixes,
)
from tunesmith.data.prepare_steps import MAX_SAMPLES, StepLog, count_kept, iter_valid_rows, report_numbers
from tunesmith.data.prepare_steps import validate_log as make_validate_log
from tunesmith.data.prepare_stream_rows import (
    ChunkPool,
    ChunkWorker,
    Kept,
    RowSettings,
    chunk_path,
    merge_log,
    read_chunk,
    read_lines,
    sign_prompts,
)
from tunesmith.data.prepare_stream_steps import (
    Mask,
    Pending,
    fill_samples,
    leakage,
    length_filter,
    near_dedup,
)
from tunesmith.data.records import DataError, DataProblem
from tunesmith.data.report import write_html_report
from tunesmith.data.rows import PrepRow, RowKind
from tunesmith.data.split import SPLITS, assign_splits

CHUNK = 4096  # rows per spilled chunk: the most row text a process holds at once


def default_num_proc() -> int:
    """Worker processes when the spec names none: one per CPU this process may run on."""
    return len(os.sched_getaffinity(0))


def prepare_data_streaming(
    spec: PrepareSpec, *, registry: DatasetRegistry | None = None, progress: Progress | None = None
) -> PrepareResult:
    """`prepare.prepare_data` with bounded memory: the same output for the same spec and inputs.

    Raises:
        DataError: invalid rows with `on_error="fail"` (every one listed), or no rows left.
        ValueError: inputs of different forms, or an output folder that is not a prepared dataset.
    """
    say = progress or (lambda _: None)
    started = time.perf_counter()
    say("loading the tokenizer")
    from tunesmith.data.estimate import context_length
    from tunesmith.models.loading import load_tokenizer, resolve_model

    model_path = resolve_model(spec.model)
    # Loaded before the worker processes start: they are forked, and share it.
    tokenizer = load_tokenizer(model_path)
    context = context_length(Path(model_path)) if Path(model_path).is_dir() else None
    tokens = (model_path, context, spec.max_tokens or context)
    spec.out.parent.mkdir(parents=True, exist_ok=True)  # the spill files go next to the output
    with tempfile.TemporaryDirectory(prefix=".tunesmith-prepare-", dir=spec.out.parent) as tmp:
        sign = spec.near_dup_threshold is not None
        settings = RowSettings(Path(tmp), _fixes(spec), spec.boilerplate_share > 0, spec.pii, sign, spec.seed)
        pool = ChunkPool(ChunkWorker(settings, tokenizer), spec.num_proc or default_num_proc())
        try:
            return _prepare(spec, Path(tmp), pool, registry, say, started, tokens)
        finally:
            pool.close()


def _prepare(
    spec: PrepareSpec,
    tmp: Path,
    pool: ChunkPool,
    registry: DatasetRegistry | None,
    say: Progress,
    started: float,
    tokens: tuple[str, int | None, int | None],
) -> PrepareResult:
    instruction = spec.instruction or DEFAULT_INSTRUCTION
    say("reading and validating")
    problems: list[DataProblem] = []
    input_rows: list[int] = []
    rows = iter_valid_rows(
        spec.inputs, spec.format, spec.column_map, instruction, spec.group_by, problems, input_rows, say
    )
    clean_log = _clean_log(spec, 0)
    line_hashes: list[npt.NDArray[np.int64]] = []
    valid = chunks = 0
    for fixed in pool.map(ChunkWorker.fix, enumerate(_chunks(rows))):
        valid, chunks = valid + fixed.rows, chunks + 1
        clean_log.changed.update(fixed.changed)
        line_hashes.append(fixed.line_hashes)
    validate = make_validate_log(spec.inputs, spec.format, spec.on_error, problems, input_rows, valid)
    clean_log.rows_in = valid
    boilerplate = _boilerplate_hashes(line_hashes, valid, spec.boilerplate_share)
    del line_hashes
    say("cleaning, finding personal data, removing exact duplicates, counting tokens")
    kept = _Kept(spec, clean_log, tmp)
    tasks = ((index, boilerplate, spec.dedup) for index in range(chunks))
    for result in pool.map(ChunkWorker.keep, tasks):
        kept.add(result, say)
    logs = [validate, *kept.logs(boilerplate)]
    say("removing near-duplicates, filtering lengths, splitting")
    kept.input_rows = input_rows
    return _finish(spec, pool, kept, logs, registry, say, started, tokens)


def _chunks(rows: Iterable[PrepRow]) -> Iterator[list[PrepRow]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        yield chunk


def _boilerplate_hashes(line_hashes: list[npt.NDArray[np.int64]], rows: int, share: float) -> dict[int, int]:
    """Hash → rows holding it, of the lines `clean.boilerplate_lines` would call boilerplate."""
    if share <= 0 or not line_hashes:
        return {}
    values, counts = np.unique(np.concatenate(line_hashes), return_counts=True)
    floor = max(5, int(share * rows))  # as clean.boilerplate_lines
    found = counts >= floor
    return dict(zip(values[found].tolist(), counts[found].tolist(), strict=True))


class _Kept:
    """What pass 2 keeps of the rows it lets through (sources, signatures, tokens, labels, groups), and
    which of each chunk's spilled rows are not exact duplicates of an earlier row (`survivors`)."""

    def __init__(self, spec: PrepareSpec, clean_log: StepLog, tmp: Path) -> None:
        self.spec = spec
        self.tmp = tmp
        self.clean = clean_log
        self.pii = StepLog("pii", {"mode": spec.pii}, 0)
        self.found = dict.fromkeys(pii.KINDS, 0)
        self.exact = StepLog("exact_dedup", {"normalisation": "case folding, whitespace collapsed"}, 0)
        self.first: dict[bytes, str] = {}  # exact-duplicate key → the source of the kept row that has it
        self.boilerplate_text: dict[int, str] = {}
        self.sources: list[str] = []
        self.labels: list[str | None] = []
        self.groups: list[str | None] = []
        self.signatures: list[dedup.Signatures] = []
        self.total: list[npt.NDArray[np.int64]] = []
        self.loss: list[npt.NDArray[np.int64]] = []
        self.survivors: list[npt.NDArray[np.int64]] = []  # per chunk: offsets of its kept rows
        self.counts = [0, 0, 0]  # rows out of clean, pii, exact dedup
        self.seen = 0  # rows in
        self.kind = RowKind.chat  # set from the first row (every row has one kind: see validation)
        self.input_rows: list[int] = []

    def add(self, chunk: Kept, say: Progress) -> None:
        """Take in a chunk's results, in chunk order, and drop its rows that repeat an earlier one."""
        say(
            f"cleaning, finding personal data, removing exact duplicates, counting tokens: {self.seen:,} rows"
        )
        index = len(self.survivors)
        self.kind = chunk.kind
        self.seen += chunk.rows_in
        merge_log(self.clean, chunk.clean)
        merge_log(self.pii, chunk.pii)
        for name, count in chunk.found.items():
            self.found[name] += count
        for line_hash, line in chunk.boilerplate_text.items():
            self.boilerplate_text.setdefault(line_hash, line)
        self.counts[0] += chunk.after_clean
        self.counts[1] += len(chunk.sources)
        survivors = self._survivors(chunk, index) if self.spec.dedup else list(range(len(chunk.sources)))
        self.counts[2] += len(survivors)
        self.survivors.append(np.asarray(survivors, dtype=np.int64))
        self.sources.extend(chunk.sources[offset] for offset in survivors)
        self.labels.extend(chunk.labels[offset] for offset in survivors)
        self.groups.extend(chunk.groups[offset] for offset in survivors)
        if chunk.signatures is not None:
            self.signatures.append(chunk.signatures[survivors])
        assert chunk.total is not None and chunk.loss is not None
        self.total.append(chunk.total[survivors])
        self.loss.append(chunk.loss[survivors])

    def _survivors(self, chunk: Kept, index: int) -> list[int]:
        """`prepare._is_first` on the chunk's keys: offsets of the rows no earlier row repeats."""
        survivors: list[int] = []
        for offset, (key, source) in enumerate(zip(chunk.keys, chunk.sources, strict=True)):
            if key in self.first:
                reason = f"exact duplicate of {self.first[key]}"
                self.exact.remove(None, reason, kind="exact duplicate", source=source)
                if len(self.exact.samples) < MAX_SAMPLES:  # read back: a few rows a run
                    self.exact.sample(read_chunk(chunk_path(self.tmp, "kept", index))[offset], reason)
                continue
            self.first[key] = source
            survivors.append(offset)
        return survivors

    def logs(self, boilerplate: dict[int, int]) -> list[StepLog]:
        """The logs of clean, pii and (when on) exact dedup, as `prepare`'s steps would write them."""
        if self.spec.boilerplate_share > 0:
            ranked = sorted(self.boilerplate_text.items(), key=lambda item: (-boilerplate[item[0]], item[1]))
            self.clean.details["boilerplate_lines"] = [line for _, line in ranked[:20]]
        self.clean.done(self.counts[0])
        self.pii.rows_in = self.counts[0]
        self.pii.details["found"] = self.found
        logs = [self.clean, self.pii.done(self.counts[1])]
        if self.spec.dedup:
            self.exact.rows_in = self.counts[1]
            logs.append(self.exact.done(self.counts[2]))
        return logs

    def read_rows(self, wanted: set[int]) -> dict[int, PrepRow]:
        """A few kept rows (by index), read back from the spill."""
        found: dict[int, PrepRow] = {}
        start = 0
        for chunk, survivors in enumerate(self.survivors):
            here = [index for index in wanted if start <= index < start + len(survivors)]
            if here:
                rows = read_chunk(chunk_path(self.tmp, "kept", chunk))
                found.update((index, rows[int(survivors[index - start])]) for index in here)
            start += len(survivors)
        return found

    def lines(self, alive: Mask) -> Iterator[tuple[int, bytes]]:
        """The output lines pass 3 spilled (of the kept rows `alive` then), with the rows' indices."""
        start = 0
        for chunk, survivors in enumerate(self.survivors):
            indices = np.nonzero(alive[start : start + len(survivors)])[0] + start
            yield from zip(indices.tolist(), read_lines(self.tmp, chunk), strict=True)
            start += len(survivors)


# ---------------------------------------------------------------- global steps on keys, then passes 3 and 4


def _finish(
    spec: PrepareSpec,
    pool: ChunkPool,
    kept: _Kept,
    logs: list[StepLog],
    registry: DatasetRegistry | None,
    say: Progress,
    started: float,
    tokens: tuple[str, int | None, int | None],
) -> PrepareResult:
    model_path, context, max_tokens = tokens
    alive = np.ones(len(kept.sources), dtype=bool)
    pending: dict[str, Pending] = {}
    clusters: list[dict[str, Any]] = []
    if spec.near_dup_threshold is not None:
        signatures = np.concatenate(kept.signatures)
        kept.signatures = []
        log, clusters = near_dedup(signatures, kept.sources, spec.near_dup_threshold, alive, pending)
        logs.append(log)
        del signatures
    total, loss = np.concatenate(kept.total), np.concatenate(kept.loss)
    logs.append(length_filter(total, spec.min_tokens, max_tokens, kept.sources, alive, pending))
    if not alive.any():
        last = next(log for log in reversed(logs) if log.removed)
        reasons = ", ".join(f"{kind}: {count}" for kind, count in last.reasons().items())
        raise DataError(
            [DataProblem(", ".join(map(str, spec.inputs)), f"no examples left after {last.name} ({reasons})")]
        )
    indices = np.nonzero(alive)[0]
    assigned = _split(spec, kept, indices, logs)
    say("checking for leakage across splits")
    prompts, texts, turn_counts = sign_prompts(pool, kept.survivors, alive, pending, clusters)
    threshold = spec.leakage_threshold
    leak_log, leaks, leak_keep = leakage(prompts, indices, assigned, kept.sources, threshold, pending)
    del prompts
    logs.append(leak_log)
    for log in logs[:-1]:
        fill_samples(log, pending.get(log.name, []), texts)
    final = indices[leak_keep]
    final_assigned = [split for split, keep in zip(assigned, leak_keep.tolist(), strict=True) if keep]
    split_of = np.full(len(kept.sources), -1, dtype=np.int8)  # a spilled row's split (-1: removed)
    split_of[final] = [SPLITS.index(split) for split in final_assigned]
    say("estimating training cost")
    total, loss = total[final], loss[final]
    estimate = _estimate(spec, model_path, total, final_assigned, registry)
    lineage = {
        "inputs": [
            {"path": str(path.resolve()), "sha256": input_sha256(path), "rows": rows}
            for path, rows in zip(spec.inputs, kept.input_rows, strict=True)
        ],
        "steps": [log.summary() for log in logs],
        "model": spec.model,
        "seed": spec.seed,
        "split": list(spec.split),
    }
    labels: dict[str, dict[str, int]] = {}
    turns: Counter[int] = Counter()
    turns_of = np.zeros(len(kept.sources), dtype=np.int64)
    turns_of[indices] = turn_counts
    leak_samples = pending.get(leak_log.name, [])
    fill_samples(leak_log, leak_samples, kept.read_rows({index for index, _ in leak_samples}))

    def lines() -> Iterator[tuple[bytes, str]]:
        for index, line in kept.lines(alive):
            if split_of[index] >= 0:
                split = SPLITS[split_of[index]]
                count_kept(kept.kind, kept.labels[index], int(turns_of[index]), split, labels, turns)
                yield line, split

    def finish() -> tuple[dict[str, Any], dict[str, Any]]:
        report = report_numbers(
            kept.kind, final_assigned, logs, labels, turns, total, loss, context, max_tokens, estimate
        )
        seconds = time.perf_counter() - started
        report.update(clusters=clusters, leaks=leaks, model=spec.model, seconds=seconds)
        return report, lineage

    say("writing")
    result: list[dict[str, Any]] = []
    digest, split_counts = write_dataset_rows(
        spec.out, lines(), lambda: _keep(result, finish()), kind=kept.kind.value, html=write_html_report
    )
    report = result[0]
    if registry is not None:
        registry.record_dataset(digest, str(spec.out.resolve()), len(final), lineage)
    report["hash"] = digest
    return PrepareResult(out=spec.out, hash=digest, splits=split_counts, report=report)


def _keep(
    result: list[dict[str, Any]], finished: tuple[dict[str, Any], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    result.append(finished[0])
    return finished


def _split(spec: PrepareSpec, kept: _Kept, indices: npt.NDArray[np.int64], logs: list[StepLog]) -> list[str]:
    """`prepare._split` on the kept rows' labels and groups."""
    classification = kept.kind is RowKind.classification
    labels = [kept.labels[i] for i in indices.tolist()] if spec.stratify and classification else None
    groups = [kept.groups[i] for i in indices.tolist()] if spec.group_by else None
    params = {
        "fractions": list(spec.split),
        "seed": spec.seed,
        "stratified_by_label": labels is not None and groups is None,
        "group_by": spec.group_by,
    }
    log = StepLog("split", params, len(indices))
    assigned = assign_splits(len(indices), spec.split, spec.seed, labels=labels, groups=groups)
    logs.append(log.done(len(indices)))
    return assigned
