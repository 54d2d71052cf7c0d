"""The per-row work of `prepare_stream`, one spilled chunk at a time, in `num_proc` processes.

Owns: what each pass does to the rows of one chunk on its own (pass 1: the text fixes and boilerplate
line hashes; pass 2: boilerplate removal, empty rows, personal data, the exact-duplicate key, MinHash
signature and token counts; pass 3: prompt signatures, the output lines, and the rows report samples
show), the chunk files each pass reads and writes, and `ChunkPool`, which runs chunks in worker
processes (or in this one) and hands results back in chunk order. A chunk's results never depend on other chunks, so what
the parent decides from them in order (exact dedup, near-dup, split, leakage: see `prepare_stream`)
is the same for any `num_proc`. Does not own: those decisions, or the steps' functions (see `prepare`).
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.pool import AsyncResult, Pool
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from transformers import PreTrainedTokenizerBase

from tunesmith.data import clean, dedup, pii
from tunesmith.data.ingest import DEFAULT_INSTRUCTION
from tunesmith.data.lengths import TokenCounter
from tunesmith.data.output import encode_row
from tunesmith.data.prepare import Fixes, _boilerplate_mask, _fix, _pii_row
from tunesmith.data.prepare_steps import MAX_SAMPLES, StepLog, chat_turns
from tunesmith.data.prepare_stream_steps import Mask, Pending
from tunesmith.data.rows import PrepRow, RowKind

Task = TypeVar("Task")
Result = TypeVar("Result")


@dataclass(frozen=True)
class RowSettings:
    """What the per-row steps need from the spec (plain values: it travels to worker processes)."""

    folder: Path  # where the chunk files go
    fixes: Fixes
    count_lines: bool  # hash lines for the boilerplate count (boilerplate_share > 0)
    pii: str
    sign: bool  # MinHash the kept rows (near-dedup on)
    seed: int


def chunk_path(folder: Path, stage: str, index: int) -> Path:
    return folder / f"{stage}-{index:06d}.pickle"


def write_chunk(path: Path, rows: list[PrepRow]) -> None:
    """Spill rows (pickled: a private temporary file, read back only by this module)."""
    with path.open("wb") as handle:
        pickle.dump(rows, handle, protocol=pickle.HIGHEST_PROTOCOL)


def read_chunk(path: Path) -> list[PrepRow]:
    with path.open("rb") as handle:
        rows: list[PrepRow] = pickle.load(handle)  # our own file, written above
    return rows


def read_lines(folder: Path, index: int) -> list[bytes]:
    """The output lines pass 3 spilled for a chunk's rows still alive then."""
    with chunk_path(folder, "lines", index).open("rb") as handle:
        lines: list[bytes] = pickle.load(handle)  # our own file, written in `ChunkWorker.sign`
    return lines


@dataclass
class Fixed:
    """Pass 1 on a chunk: rows spilled, rows changed per fix, hashes of its boilerplate candidate lines."""

    rows: int
    changed: Counter[str]
    line_hashes: npt.NDArray[np.int64]


@dataclass
class Kept:
    """Pass 2 on a chunk: its clean and PII logs, and the keys of the rows it spilled (the candidates)."""

    rows_in: int
    after_clean: int  # rows left once empty rows are gone
    clean: StepLog  # rows removed as empty, rows whose boilerplate went
    pii: StepLog
    found: dict[str, int]
    boilerplate_text: dict[int, str]  # line hash → the line, for lines this chunk lost
    kind: RowKind
    sources: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    groups: list[str | None] = field(default_factory=list)
    keys: list[bytes] = field(default_factory=list)  # exact-duplicate keys (dedup on)
    signatures: dedup.Signatures | None = None
    total: npt.NDArray[np.int64] | None = None
    loss: npt.NDArray[np.int64] | None = None


@dataclass(frozen=True)
class SignTask:
    """Pass 3 on a chunk: which candidates are kept rows (`survivors`, offsets), which of those are
    still alive (their prompts are signed), and which kept rows (global indices) samples show."""

    index: int
    survivors: npt.NDArray[np.int64]
    alive: npt.NDArray[np.bool_]
    start: int  # the global index of the chunk's first kept row
    wanted: list[int]


@dataclass(frozen=True)
class Signed:
    """Pass 3 on a chunk: prompt signatures and `chat_turns` of its rows still alive (whose output lines
    it spilled, see `read_lines`), and the rows samples show, by global index."""

    signatures: dedup.Signatures
    texts: dict[int, PrepRow]
    turns: npt.NDArray[np.int64]


class ChunkWorker:
    """The per-row steps with their caches (token counts, word hashes): one per process."""

    def __init__(self, settings: RowSettings, tokenizer: PreTrainedTokenizerBase) -> None:
        self.settings = settings
        self.counter = TokenCounter(tokenizer)
        self.hasher = dedup.MinHasher(settings.seed)

    def fix(self, task: tuple[int, list[PrepRow]]) -> Fixed:
        """Pass 1: fix each row's texts, spill the chunk, hash its boilerplate candidate lines."""
        index, rows = task
        log = StepLog("clean", {}, len(rows))
        fixed = [_fix(row, self.settings.fixes, log) for row in rows]
        write_chunk(chunk_path(self.settings.folder, "fixed", index), fixed)
        hashes = _line_hashes(fixed) if self.settings.count_lines else np.zeros(0, dtype=np.int64)
        return Fixed(len(rows), log.changed, hashes)

    def keep(self, task: tuple[int, dict[int, int], bool]) -> Kept:
        """Pass 2: remove boilerplate, empty rows and personal data; spill the rest with their keys."""
        index, boilerplate, exact = task
        source = chunk_path(self.settings.folder, "fixed", index)
        rows = read_chunk(source)
        source.unlink()
        clean_log = StepLog("clean", {}, len(rows))
        pii_log = StepLog("pii", {}, 0)
        result = Kept(len(rows), 0, clean_log, pii_log, dict.fromkeys(pii.KINDS, 0), {}, rows[0].kind)
        out = []
        for row in rows:
            if boilerplate:
                row = _strip_boilerplate(row, boilerplate, clean_log, result.boilerplate_text)
            if any(not text.strip() for text in row.texts):
                clean_log.remove(row, "empty after cleaning")
                continue
            result.after_clean += 1
            kept = _pii_row(row, self.settings.pii, pii_log, result.found)
            if kept is not None:
                out.append(kept)
        write_chunk(chunk_path(self.settings.folder, "kept", index), out)
        result.sources = [row.source for row in out]
        result.labels = [row.label() for row in out]
        result.groups = [row.group for row in out]
        if exact:
            result.keys = [dedup.exact_key(row.full_text()) for row in out]
        if self.settings.sign:
            result.signatures = self.hasher.signatures([row.full_text() for row in out])
        result.total, result.loss = self.counter.count(out)
        return result

    def sign(self, task: SignTask) -> Signed:
        """Pass 3: sign the prompts of the chunk's rows still alive, and spill them as written out."""
        rows = read_chunk(chunk_path(self.settings.folder, "kept", task.index))
        kept = [rows[offset] for offset in task.survivors.tolist()]
        left = [row for row, alive in zip(kept, task.alive.tolist(), strict=True) if alive]
        lines = [encode_row(row.output(DEFAULT_INSTRUCTION)) for row in left]  # a custom instruction stays
        with chunk_path(self.settings.folder, "lines", task.index).open("wb") as handle:
            pickle.dump(lines, handle, protocol=pickle.HIGHEST_PROTOCOL)
        return Signed(
            self.hasher.signatures([row.prompt_text() for row in left]),
            {index: kept[index - task.start] for index in task.wanted},
            np.asarray([chat_turns(row) for row in left], dtype=np.int64),
        )


def _line_hashes(rows: list[PrepRow]) -> npt.NDArray[np.int64]:
    """Hashes of each row's distinct boilerplate-candidate lines (as `clean.count_lines` counts them).

    `hash` is salted per interpreter: the worker processes are forked, so they share this one's salt.
    """
    hashes: list[int] = []
    for row in rows:
        texts = (text for text, mask in zip(row.texts, _boilerplate_mask(row), strict=True) if mask)
        lines = {line.strip() for text in texts for line in text.split("\n")}
        hashes.extend(hash(line) for line in lines if len(line) >= clean.BOILERPLATE_MIN_CHARS)
    return np.asarray(hashes, dtype=np.int64)


def _strip_boilerplate(
    row: PrepRow, boilerplate: dict[int, int], log: StepLog, boilerplate_text: dict[int, str]
) -> PrepRow:
    texts = []
    for text, mask in zip(row.texts, _boilerplate_mask(row), strict=True):
        lines = {line.strip() for line in text.split("\n")} if mask else set()
        found = {
            line for line in lines if len(line) >= clean.BOILERPLATE_MIN_CHARS and hash(line) in boilerplate
        }
        for line in found:
            boilerplate_text.setdefault(hash(line), line)
        texts.append(clean.remove_lines(text, found))
    if texts == list(row.texts):
        return row
    log.changed["removed_boilerplate"] += 1
    return row.with_texts(texts)


def merge_log(log: StepLog, part: StepLog) -> None:
    """Add a chunk's log to the run's: removed rows, changed counts and samples, as if one log saw both."""
    log.removed.extend(part.removed)
    log.changed.update(part.changed)
    log.samples.extend(part.samples[: MAX_SAMPLES - len(log.samples)])


def sign_prompts(
    pool: ChunkPool,
    survivors: list[npt.NDArray[np.int64]],
    alive: Mask,
    pending: dict[str, Pending],
    clusters: list[dict[str, Any]],
) -> tuple[dedup.Signatures, dict[int, PrepRow], npt.NDArray[np.int64]]:
    """Pass 3: sign the prompts of the rows left (for the leakage check), read the rows samples show and
    spill the rows left as written out (`survivors`: per chunk, the offsets of its kept rows; `alive`:
    over the kept rows). Returns the signatures and `chat_turns` of the rows left, and the rows read."""
    wanted = {index for samples in pending.values() for index, _ in samples}
    wanted |= {member["text"] for cluster in clusters for member in cluster["members"]}
    starts = np.cumsum([0] + [len(offsets) for offsets in survivors])
    tasks = (
        SignTask(
            chunk,
            offsets,
            alive[start : start + len(offsets)],
            start,
            sorted(index for index in wanted if start <= index < start + len(offsets)),
        )
        for chunk, (offsets, start) in enumerate(zip(survivors, starts.tolist(), strict=False))
    )
    signatures: list[dedup.Signatures] = []
    turns: list[npt.NDArray[np.int64]] = []
    texts: dict[int, PrepRow] = {}
    for signed in pool.map(ChunkWorker.sign, tasks):
        signatures.append(signed.signatures)
        turns.append(signed.turns)
        texts.update(signed.texts)
    for cluster in clusters:
        for member in cluster["members"]:
            member["text"] = texts[member["text"]].full_text()[:300]
    return np.concatenate(signatures), texts, np.concatenate(turns)


# ---------------------------------------------------------------- running chunks in processes

_WORKER: ChunkWorker | None = None  # a worker process's own ChunkWorker, set once as the process starts


def _install(worker: ChunkWorker) -> None:
    global _WORKER
    _WORKER = worker


def _run(step: Callable[[ChunkWorker, Task], Result], task: Task) -> Result:
    assert _WORKER is not None, "ChunkPool starts its processes with _install"
    return step(_WORKER, task)


class ChunkPool:
    """Runs a pass's chunks in `num_proc` processes (1: in this one), results in chunk order.

    The processes are forked (they share the loaded tokenizer and `hash`'s salt); a few chunks run
    ahead of the one the parent is reading, no more, so memory stays bounded.
    """

    def __init__(self, worker: ChunkWorker, num_proc: int) -> None:
        self.worker = worker
        self.num_proc = num_proc
        self.pool: Pool | None = None
        if num_proc > 1:
            context = multiprocessing.get_context("fork")
            self.pool = context.Pool(num_proc, initializer=_install, initargs=(worker,))

    def map(self, step: Callable[[ChunkWorker, Task], Result], tasks: Iterable[Task]) -> Iterator[Result]:
        if self.pool is None:
            for task in tasks:
                yield step(self.worker, task)
            return
        ahead: deque[AsyncResult[Result]] = deque()
        for task in tasks:
            ahead.append(self.pool.apply_async(_run, (step, task)))
            if len(ahead) > 2 * self.num_proc:
                yield ahead.popleft().get()
        while ahead:
            yield ahead.popleft().get()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
