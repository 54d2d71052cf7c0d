"""`prepare_data` for data beyond memory: the same steps in the same order, rows streamed through disk.

Owns: running the steps of `prepare` in passes over chunks of rows spilled to temporary files, so
memory grows only with what the global steps must keep per row (a source name, two MinHash signatures,
token counts, a split), never with the rows' text:

1. read, validate and fix each row (clean's per-text fixes); hash its lines for the boilerplate count;
2. remove boilerplate, empty rows and personal data; drop exact duplicates (hashes only); sign the
   kept rows for near-dedup and count their tokens;
3. (in memory, signatures only) near-dedup, the length filter and the split; then a pass signs the
   prompts of the rows left for the leakage check;
4. write the kept rows to their splits.

What each step finds is exactly what `prepare`'s in-memory steps find on the same input (a test holds
them to the same dataset hash and report counts). The one approximation: boilerplate lines are counted
by 64-bit hash, not by text. Does not own: the checks themselves or their logs (see `prepare`), nor
the global steps' rewrites on keys (see `prepare_stream_steps`).
"""

from __future__ import annotations

import itertools
import pickle
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tunesmith.config import PrepareSpec
from tunesmith.data import clean, dedup, pii
from tunesmith.data.ingest import DEFAULT_INSTRUCTION
from tunesmith.data.lengths import count_tokens
from tunesmith.data.output import input_sha256, write_dataset_rows
from tunesmith.data.prepare import (
    DatasetRegistry,
    Fixes,
    PrepareResult,
    Progress,
    _boilerplate_mask,
    _clean_log,
    _estimate,
    _fix,
    _fixes,
    _is_first,
    _pii_row,
)
from tunesmith.data.prepare_steps import StepLog, count_row, iter_valid_rows, report_numbers
from tunesmith.data.prepare_steps import validate_log as make_validate_log
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

CHUNK = 4096  # rows per spilled chunk: the most row text held in memory at once


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
    spec.out.parent.mkdir(parents=True, exist_ok=True)  # the spill files go next to the output
    with tempfile.TemporaryDirectory(prefix=".tunesmith-prepare-", dir=spec.out.parent) as tmp:
        return _prepare(spec, Path(tmp), registry, say, started)


def _prepare(
    spec: PrepareSpec, tmp: Path, registry: DatasetRegistry | None, say: Progress, started: float
) -> PrepareResult:
    instruction = spec.instruction or DEFAULT_INSTRUCTION
    say("reading and validating")
    problems: list[DataProblem] = []
    input_rows: list[int] = []
    rows = iter_valid_rows(
        spec.inputs, spec.format, spec.column_map, instruction, spec.group_by, problems, input_rows, say
    )
    clean_log = _clean_log(spec, 0)
    fixes = _fixes(spec)
    line_hashes: list[npt.NDArray[np.int64]] = []
    count_lines = spec.boilerplate_share > 0
    fixed = (_chunk_fixed(chunk, fixes, clean_log, line_hashes, count_lines) for chunk in _chunks(rows))
    valid = _spill(fixed, tmp / "fixed.pickle")
    validate = make_validate_log(spec.inputs, spec.format, spec.on_error, problems, input_rows, valid)
    clean_log.rows_in = valid
    boilerplate = _boilerplate_hashes(line_hashes, valid, spec.boilerplate_share)
    del line_hashes
    say("cleaning, finding personal data, removing exact duplicates, counting tokens")
    from tunesmith.data.estimate import context_length
    from tunesmith.models.loading import load_tokenizer, resolve_model

    model_path = resolve_model(spec.model)
    tokenizer = load_tokenizer(model_path)
    context = context_length(Path(model_path)) if Path(model_path).is_dir() else None
    max_tokens = spec.max_tokens or context
    kept = _Kept(spec, clean_log)
    second = (kept.chunk(chunk, boilerplate, tokenizer, say) for chunk in _read(tmp / "fixed.pickle"))
    _spill(second, tmp / "kept.pickle")
    (tmp / "fixed.pickle").unlink()
    logs = [validate, *kept.logs(boilerplate)]
    say("removing near-duplicates, filtering lengths, splitting")
    kept.input_rows = input_rows
    tokens = (model_path, context, max_tokens)
    return _finish(spec, tmp / "kept.pickle", kept, logs, registry, say, started, tokens)


def _chunks(rows: Iterable[PrepRow]) -> Iterator[list[PrepRow]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        yield chunk


def _spill(chunks: Iterable[list[PrepRow]], path: Path) -> int:
    """Write chunks of rows to `path` (pickled: a private temporary file); returns the rows written."""
    count = 0
    with path.open("wb") as handle:
        for chunk in chunks:
            pickle.dump(chunk, handle, protocol=pickle.HIGHEST_PROTOCOL)
            count += len(chunk)
    return count


def _read(path: Path) -> Iterator[list[PrepRow]]:
    with path.open("rb") as handle:
        while True:
            try:
                chunk: list[PrepRow] = pickle.load(handle)  # our own file, written above
            except EOFError:
                return
            yield chunk


def _rows(path: Path) -> Iterator[tuple[int, PrepRow]]:
    return enumerate(row for chunk in _read(path) for row in chunk)


# ---------------------------------------------------------------- pass 1: validate and fix


def _line_hashes(rows: list[PrepRow]) -> npt.NDArray[np.int64]:
    """Hashes of each row's distinct boilerplate-candidate lines (as `clean.count_lines` counts them)."""
    hashes: list[int] = []
    for row in rows:
        texts = (text for text, mask in zip(row.texts, _boilerplate_mask(row), strict=True) if mask)
        lines = {line.strip() for text in texts for line in text.split("\n")}
        hashes.extend(hash(line) for line in lines if len(line) >= clean.BOILERPLATE_MIN_CHARS)
    return np.asarray(hashes, dtype=np.int64)


def _chunk_fixed(
    rows: list[PrepRow],
    fixes: Fixes,
    log: StepLog,
    line_hashes: list[npt.NDArray[np.int64]],
    count_lines: bool,
) -> list[PrepRow]:
    fixed = [_fix(row, fixes, log) for row in rows]
    if count_lines:
        line_hashes.append(_line_hashes(fixed))
    return fixed


def _boilerplate_hashes(line_hashes: list[npt.NDArray[np.int64]], rows: int, share: float) -> dict[int, int]:
    """Hash → rows holding it, of the lines `clean.boilerplate_lines` would call boilerplate."""
    if share <= 0 or not line_hashes:
        return {}
    values, counts = np.unique(np.concatenate(line_hashes), return_counts=True)
    floor = max(5, int(share * rows))  # as clean.boilerplate_lines
    found = counts >= floor
    return dict(zip(values[found].tolist(), counts[found].tolist(), strict=True))


# ---------------------------------------------------------------- pass 2: per-row steps, keys kept


class _Kept:
    """What pass 2 keeps of the rows it lets through: sources, signatures, tokens, labels, groups."""

    def __init__(self, spec: PrepareSpec, clean_log: StepLog) -> None:
        self.spec = spec
        self.clean = clean_log
        self.pii = StepLog("pii", {"mode": spec.pii}, 0)
        self.found = dict.fromkeys(pii.KINDS, 0)
        self.exact = StepLog("exact_dedup", {"normalisation": "case folding, whitespace collapsed"}, 0)
        self.first: dict[bytes, str] = {}
        self.hasher = dedup.MinHasher(spec.seed)
        self.boilerplate_text: dict[int, str] = {}
        self.sources: list[str] = []
        self.labels: list[str | None] = []
        self.groups: list[str | None] = []
        self.signatures: list[dedup.Signatures] = []
        self.total: list[npt.NDArray[np.int64]] = []
        self.loss: list[npt.NDArray[np.int64]] = []
        self.counts = [0, 0, 0]  # rows out of clean, pii, exact dedup
        self.seen = 0  # rows in
        self.kind = RowKind.chat  # set from the first row (every row has one kind: see validation)
        self.input_rows: list[int] = []

    def chunk(
        self, rows: list[PrepRow], boilerplate: dict[int, int], tokenizer: Any, say: Progress
    ) -> list[PrepRow]:
        say(
            f"cleaning, finding personal data, removing exact duplicates, counting tokens: {self.seen:,} rows"
        )
        self.seen += len(rows)
        out = []
        self.kind = rows[0].kind
        for row in rows:
            if boilerplate:
                row = self._strip_boilerplate(row, boilerplate)
            if any(not text.strip() for text in row.texts):
                self.clean.remove(row, "empty after cleaning")
                continue
            self.counts[0] += 1
            kept = _pii_row(row, self.spec.pii, self.pii, self.found)
            if kept is None:
                continue
            self.counts[1] += 1
            if self.spec.dedup and not _is_first(kept, self.first, self.exact):
                continue
            out.append(kept)
        self.counts[2] += len(out)
        self.sources.extend(row.source for row in out)
        self.labels.extend(row.label() for row in out)
        self.groups.extend(row.group for row in out)
        if self.spec.near_dup_threshold is not None:
            self.signatures.append(self.hasher.signatures([row.full_text() for row in out]))
        total, loss = count_tokens(tokenizer, out)
        self.total.append(total)
        self.loss.append(loss)
        return out

    def _strip_boilerplate(self, row: PrepRow, boilerplate: dict[int, int]) -> PrepRow:
        texts = []
        for text, mask in zip(row.texts, _boilerplate_mask(row), strict=True):
            lines = {line.strip() for line in text.split("\n")} if mask else set()
            found = {
                line
                for line in lines
                if len(line) >= clean.BOILERPLATE_MIN_CHARS and hash(line) in boilerplate
            }
            for line in found:
                self.boilerplate_text.setdefault(hash(line), line)
            texts.append(clean.remove_lines(text, found))
        if texts == list(row.texts):
            return row
        self.clean.changed["removed_boilerplate"] += 1
        return row.with_texts(texts)

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


# ---------------------------------------------------------------- global steps on keys, then passes 3 and 4


def _finish(
    spec: PrepareSpec,
    spill: Path,
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
    prompts, texts = _prompt_pass(spill, spec.seed, alive, pending, clusters)
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
    leak_rows = {index for index, _ in pending.get(leak_log.name, [])}
    leak_texts: dict[int, PrepRow] = {}

    def rows() -> Iterator[tuple[dict[str, Any], str]]:
        for index, row in _rows(spill):
            if index in leak_rows:
                leak_texts[index] = row
            if split_of[index] >= 0:
                split = SPLITS[split_of[index]]
                count_row(row, split, labels, turns)
                yield row.output(DEFAULT_INSTRUCTION), split  # a custom instruction is kept per row

    def finish() -> tuple[dict[str, Any], dict[str, Any]]:
        fill_samples(leak_log, pending.get(leak_log.name, []), leak_texts)
        report = report_numbers(
            kept.kind, final_assigned, logs, labels, turns, total, loss, context, max_tokens, estimate
        )
        seconds = time.perf_counter() - started
        report.update(clusters=clusters, leaks=leaks, model=spec.model, seconds=seconds)
        return report, lineage

    say("writing")
    result: list[dict[str, Any]] = []
    digest, split_counts = write_dataset_rows(
        spec.out, rows(), lambda: _keep(result, finish()), kind=kept.kind.value, html=write_html_report
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


def _prompt_pass(
    spill: Path, seed: int, alive: Mask, pending: dict[str, Pending], clusters: list[dict[str, Any]]
) -> tuple[dedup.Signatures, dict[int, PrepRow]]:
    """Sign the prompts of the rows left (for the leakage check) and read the rows samples show."""
    wanted = {index for samples in pending.values() for index, _ in samples}
    wanted |= {member["text"] for cluster in clusters for member in cluster["members"]}
    hasher = dedup.MinHasher(seed)
    signatures: list[dedup.Signatures] = []
    texts: dict[int, PrepRow] = {}
    start = 0
    for chunk in _read(spill):
        left = [row for offset, row in enumerate(chunk) if alive[start + offset]]
        signatures.append(hasher.signatures([row.prompt_text() for row in left]))
        texts.update((start + offset, row) for offset, row in enumerate(chunk) if start + offset in wanted)
        start += len(chunk)
    for cluster in clusters:
        for member in cluster["members"]:
            member["text"] = texts[member["text"]].full_text()[:300]
    return np.concatenate(signatures), texts
