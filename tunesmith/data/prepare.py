"""`prepare_data`: raw files in, a versioned train/val/test dataset with a report out, in one pass.

Owns: the order of the steps (validate → clean → PII → exact dedup → near dedup → length → split →
leakage), counting what each step removed and changed, and writing the output folder atomically
(`train.jsonl`, `val.jsonl`, `test.jsonl`, `report.json`, `report.html`, `dataset.json`). Does not
own: the checks themselves (`clean`, `pii`, `dedup`, `split`, `lengths`), reading inputs and the
report's numbers (`prepare_steps`), the report's look (`report`) or the cost model (`estimate`). Nothing
is dropped silently: every removed row is listed in `report.json` with its source and reason. The
steps here hold every row in memory and read top to bottom (`prepare_data_in_memory`, the reference);
`prepare_data` runs the same steps streamed through disk with bounded memory (see `prepare_stream`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tunesmith.config import PrepareSpec
from tunesmith.data import clean, dedup, pii
from tunesmith.data.ingest import DEFAULT_INSTRUCTION
from tunesmith.data.lengths import count_tokens
from tunesmith.data.output import input_sha256, write_dataset
from tunesmith.data.prepare_steps import StepLog, build_report, read_inputs
from tunesmith.data.records import DataError, DataProblem
from tunesmith.data.report import write_html_report
from tunesmith.data.rows import PrepRow, RowKind
from tunesmith.data.split import SPLITS, assign_splits

Progress = Callable[[str], None]


class DatasetRegistry(Protocol):
    def record_dataset(self, digest: str, path: str, rows: int, lineage: dict[str, Any]) -> None: ...

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    hash: str
    splits: dict[str, int]
    report: dict[str, Any]


def prepare_data(
    spec: PrepareSpec, *, registry: DatasetRegistry | None = None, progress: Progress | None = None
) -> PrepareResult:
    """Run every preparation step on `spec.inputs` and write the dataset folder `spec.out`.

    The rows stream through disk with bounded memory (`prepare_stream`), whatever the input's size: as
    fast as `prepare_data_in_memory` on 100k rows, and it finds and writes exactly the same.

    Raises:
        DataError: invalid rows with `on_error="fail"` (every one listed), or no rows left.
        ValueError: inputs of different forms, or an output folder that is not a prepared dataset.
    """
    from tunesmith.data.prepare_stream import prepare_data_streaming  # it builds on this module's steps

    return prepare_data_streaming(spec, registry=registry, progress=progress)


def prepare_data_in_memory(
    spec: PrepareSpec, *, registry: DatasetRegistry | None = None, progress: Progress | None = None
) -> PrepareResult:
    """Every preparation step with every row in memory: the reference `prepare_stream` is held to.

    The steps read top to bottom here; `prepare_stream` runs the same per-row helpers over spilled
    chunks and rewrites the global steps on keys (a test holds both to the same output).

    Raises:
        DataError: invalid rows with `on_error="fail"` (every one listed), or no rows left.
        ValueError: inputs of different forms, or an output folder that is not a prepared dataset.
    """
    say = progress or (lambda _: None)
    started = time.perf_counter()
    instruction = spec.instruction or DEFAULT_INSTRUCTION
    say("reading and validating")
    rows, validate_log, input_rows = read_inputs(
        spec.inputs, spec.format, spec.column_map, instruction, spec.group_by, spec.on_error, say
    )
    logs = [validate_log]
    say("cleaning")
    rows = _clean(rows, spec, logs)
    say("finding personal data")
    rows = _pii(rows, spec.pii, logs)
    if spec.dedup:
        say("removing exact duplicates")
        rows = _exact_dedup(rows, logs)
    clusters_report: list[dict[str, Any]] = []
    if spec.near_dup_threshold is not None:
        say("removing near-duplicates")
        rows, clusters_report = _near_dedup(rows, spec.near_dup_threshold, spec.seed, logs)
    say("counting tokens")
    from tunesmith.data.estimate import context_length
    from tunesmith.models.loading import load_tokenizer, resolve_model

    model_path = resolve_model(spec.model)
    tokenizer = load_tokenizer(model_path)
    context = context_length(Path(model_path)) if Path(model_path).is_dir() else None
    max_tokens = spec.max_tokens or context
    rows, total_tokens, loss_tokens = _length_filter(rows, tokenizer, spec.min_tokens, max_tokens, logs)
    if not rows:
        last = next(log for log in reversed(logs) if log.removed)
        reasons = ", ".join(f"{kind}: {count}" for kind, count in last.reasons().items())
        raise DataError(
            [DataProblem(", ".join(map(str, spec.inputs)), f"no examples left after {last.name} ({reasons})")]
        )
    say("splitting")
    assigned = _split(rows, spec, logs)
    say("checking for leakage across splits")
    keep, leaks = _leakage(rows, assigned, spec.leakage_threshold, spec.seed, logs)
    rows = [row for row, kept in zip(rows, keep, strict=True) if kept]
    assigned = [split for split, kept in zip(assigned, keep, strict=True) if kept]
    total_tokens, loss_tokens = total_tokens[keep], loss_tokens[keep]
    say("estimating training cost")
    estimate = _estimate(spec, model_path, total_tokens, assigned, registry)
    report = build_report(rows, assigned, logs, total_tokens, loss_tokens, context, max_tokens, estimate)
    report.update(
        clusters=clusters_report, leaks=leaks, model=spec.model, seconds=time.perf_counter() - started
    )
    say("writing")
    lineage = {
        "inputs": [
            {"path": str(path.resolve()), "sha256": input_sha256(path), "rows": count}
            for path, count in zip(spec.inputs, input_rows, strict=True)
        ],
        "steps": [log.summary() for log in logs],
        "model": spec.model,
        "seed": spec.seed,
        "split": list(spec.split),
    }
    outputs = [row.output(DEFAULT_INSTRUCTION) for row in rows]  # a custom instruction is kept per row
    digest, split_counts = write_dataset(
        spec.out, outputs, assigned, report, lineage, kind=rows[0].kind.value, html=write_html_report
    )
    if registry is not None:
        registry.record_dataset(digest, str(spec.out.resolve()), len(rows), lineage)
    report["hash"] = digest
    return PrepareResult(out=spec.out, hash=digest, splits=split_counts, report=report)


# ---------------------------------------------------------------- steps: rows in, rows out, logged


def _clean(rows: list[PrepRow], spec: PrepareSpec, logs: list[StepLog]) -> list[PrepRow]:
    log = _clean_log(spec, len(rows))
    fixes = _fixes(spec)
    cleaned = [_fix(row, fixes, log) for row in rows]
    if spec.boilerplate_share > 0:
        cleaned = _remove_boilerplate(cleaned, spec.boilerplate_share, log)
    kept = []
    for row in cleaned:
        if any(not text.strip() for text in row.texts):
            log.remove(row, "empty after cleaning")
        else:
            kept.append(row)
    logs.append(log.done(len(kept)))
    return kept


def _clean_log(spec: PrepareSpec, rows_in: int) -> StepLog:
    params = {
        "fix_unicode": spec.fix_unicode,
        "strip_html": spec.strip_html,
        "normalize_whitespace": spec.normalize_whitespace,
        "boilerplate_share": spec.boilerplate_share,
    }
    return StepLog("clean", params, rows_in)


Fixes = list[tuple[str, Callable[[str], str]]]


def _fixes(spec: PrepareSpec) -> Fixes:
    """The per-text fixes the spec turns on, each with the name its changed-row count goes under."""
    fixes: Fixes = []
    if spec.fix_unicode:
        fixes.append(("fixed_unicode", clean.fix_unicode))
    if spec.strip_html:
        fixes.append(("stripped_html", clean.strip_html))
    if spec.normalize_whitespace:
        fixes.append(("normalized_whitespace", clean.normalize_whitespace))
    return fixes


def _fix(row: PrepRow, fixes: Fixes, log: StepLog) -> PrepRow:
    texts = list(row.texts)
    for name, fix in fixes:
        fixed = [fix(text) for text in texts]
        if fixed != texts:
            log.changed[name] += 1
            texts = fixed
    return row.with_texts(texts) if texts != list(row.texts) else row


def _boilerplate_mask(row: PrepRow) -> list[bool]:
    """Which texts boilerplate is removed from: documents, preference answers and assistant turns.

    Prompts are left alone: an instruction repeated across rows ("Summarise the text below:") is content.
    """
    if row.kind is RowKind.chat:  # the turns, then the references (answers too)
        return [role == "assistant" for role in row.roles] + [True] * len(row.references())
    if row.kind in (RowKind.preference, RowKind.rated):  # the prompt turns, then the answers
        return [index >= len(row.roles) for index in range(len(row.texts))]
    return [row.kind is RowKind.text] * len(row.texts)


def _remove_boilerplate(rows: list[PrepRow], share: float, log: StepLog) -> list[PrepRow]:
    masks = [_boilerplate_mask(row) for row in rows]
    texts = (
        [t for t, m in zip(row.texts, mask, strict=True) if m] for row, mask in zip(rows, masks, strict=True)
    )
    counts = clean.count_lines(texts)
    lines = clean.boilerplate_lines(counts, len(rows), share)
    log.details["boilerplate_lines"] = sorted(lines, key=lambda line: (-counts[line], line))[:20]
    if not lines:
        return rows
    out = []
    for row, mask in zip(rows, masks, strict=True):
        cleaned = [clean.remove_lines(t, lines) if m else t for t, m in zip(row.texts, mask, strict=True)]
        if cleaned != list(row.texts):
            log.changed["removed_boilerplate"] += 1
            row = row.with_texts(cleaned)
        out.append(row)
    return out


def _pii(rows: list[PrepRow], mode: str, logs: list[StepLog]) -> list[PrepRow]:
    log = StepLog("pii", {"mode": mode}, len(rows))
    found = dict.fromkeys(pii.KINDS, 0)
    kept = [kept_row for row in rows if (kept_row := _pii_row(row, mode, log, found)) is not None]
    log.details["found"] = found
    logs.append(log.done(len(kept)))
    return kept


def _pii_row(row: PrepRow, mode: str, log: StepLog, found: dict[str, int]) -> PrepRow | None:
    """The row with its personal data handled per `mode` (None: dropped); counts go to `log`, `found`."""
    matches = [pii.find_pii(text) for text in row.texts]
    kinds = sorted({match.kind for text_matches in matches for match in text_matches})
    if not kinds:
        return row
    for text_matches in matches:
        for match in text_matches:
            found[match.kind] += 1
    log.changed["rows_with_pii"] += 1
    if mode == "drop":
        log.remove(row, f"contains personal data: {', '.join(kinds)}", kind="personal data")
        return None
    if mode == "redact":
        row = row.with_texts([pii.redact(text, m) for text, m in zip(row.texts, matches, strict=True)])
        log.changed["redacted_rows"] += 1
        log.sample(row, f"redacted {', '.join(kinds)}")
    else:
        log.sample(row, f"found {', '.join(kinds)}")
    return row


def _exact_dedup(rows: list[PrepRow], logs: list[StepLog]) -> list[PrepRow]:
    log = StepLog("exact_dedup", {"normalisation": "case folding, whitespace collapsed"}, len(rows))
    first: dict[bytes, str] = {}
    kept = []
    for row in rows:
        if _is_first(row, first, log):
            kept.append(row)
    logs.append(log.done(len(kept)))
    return kept


def _is_first(row: PrepRow, first: dict[bytes, str], log: StepLog) -> bool:
    """Whether no exact duplicate of `row` came before it (`first`: key → source of rows seen)."""
    key = dedup.exact_key(row.full_text())
    if key in first:
        log.remove(row, f"exact duplicate of {first[key]}", kind="exact duplicate")
        return False
    first[key] = row.source
    return True


def _near_dedup(
    rows: list[PrepRow], threshold: float, seed: int, logs: list[StepLog]
) -> tuple[list[PrepRow], list[dict[str, Any]]]:
    log = StepLog("near_dedup", {"threshold": threshold, "method": "MinHash/LSH, word 3-grams"}, len(rows))
    signatures = dedup.MinHasher(seed).signatures([row.full_text() for row in rows])
    drop = np.zeros(len(rows), dtype=bool)
    report: list[dict[str, Any]] = []
    for cluster in dedup.resolve_clusters(signatures, threshold):
        members, kept = cluster.members, cluster.kept
        for index, like, score in cluster.removed:
            drop[index] = True
            reason = f"near-duplicate of {rows[like].source} (Jaccard ≈ {score:.2f})"
            log.remove(rows[index], reason, kind="near-duplicate")
        report.append(
            {
                "size": len(members),
                "kept": ", ".join(rows[i].source for i in kept[:5]),
                "members": [
                    {"source": rows[i].source, "text": rows[i].full_text()[:300]} for i in members[:5]
                ],
            }
        )
    report.sort(key=lambda cluster: -cluster["size"])
    logs.append(log.done(int((~drop).sum())))
    return [row for row, dropped in zip(rows, drop.tolist(), strict=True) if not dropped], report[:20]


def _length_filter(
    rows: list[PrepRow], tokenizer: Any, min_tokens: int, max_tokens: int | None, logs: list[StepLog]
) -> tuple[list[PrepRow], np.ndarray, np.ndarray]:
    log = StepLog("length", {"min_tokens": min_tokens, "max_tokens": max_tokens}, len(rows))
    total, loss = count_tokens(tokenizer, rows)
    keep = total >= min_tokens
    if max_tokens is not None:
        keep &= total <= max_tokens
    for index in np.nonzero(~keep)[0].tolist():
        bound = f"< min {min_tokens}" if total[index] < min_tokens else f"> max {max_tokens}"
        log.remove(rows[index], f"{int(total[index])} tokens {bound}", kind=f"tokens {bound}")
    logs.append(log.done(int(keep.sum())))
    return [row for row, kept in zip(rows, keep.tolist(), strict=True) if kept], total[keep], loss[keep]


def _split(rows: list[PrepRow], spec: PrepareSpec, logs: list[StepLog]) -> list[str]:
    labels = (
        [row.label() for row in rows] if spec.stratify and rows[0].kind is RowKind.classification else None
    )
    groups = [row.group for row in rows] if spec.group_by else None
    params = {
        "fractions": list(spec.split),
        "seed": spec.seed,
        "stratified_by_label": labels is not None and groups is None,
        "group_by": spec.group_by,
    }
    log = StepLog("split", params, len(rows))
    assigned = assign_splits(len(rows), spec.split, spec.seed, labels=labels, groups=groups)
    logs.append(log.done(len(rows)))
    return assigned


def _leakage(
    rows: list[PrepRow], assigned: list[str], threshold: float, seed: int, logs: list[StepLog]
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows whose prompt nearly repeats one in an earlier split (train < val < test) leave their split."""
    log = StepLog("leakage", {"threshold": threshold, "compares": "prompts (model input)"}, len(rows))
    signatures = dedup.MinHasher(seed).signatures([row.prompt_text() for row in rows])
    groups = dedup.clusters(len(rows), dedup.candidate_pairs(signatures, threshold))
    order = {name: rank for rank, name in enumerate(SPLITS)}
    keep = np.ones(len(rows), dtype=bool)
    leaks = []
    for members in groups:
        # The cluster's earliest split keeps its rows; the same prompt in a later split is a leak.
        first = min(members, key=lambda i: (order[assigned[i]], i))
        later = [i for i in members if order[assigned[i]] > order[assigned[first]]]
        if not later:
            continue
        scores = dedup.similarity(signatures[later], signatures[[first] * len(later)]).tolist()
        for index, score in zip(later, scores, strict=True):
            keep[index] = False
            reason = f"{assigned[index]} prompt near-duplicates {assigned[first]} row {rows[first].source}"
            kind = f"{assigned[index]} leaks from {assigned[first]}"
            log.remove(rows[index], f"{reason} (Jaccard ≈ {score:.2f})", kind=kind)
            leaks.append(
                {
                    "removed": rows[index].source,
                    "from": assigned[index],
                    "matches": rows[first].source,
                    "in": assigned[first],
                    "similarity": round(score, 3),
                }
            )
    logs.append(log.done(int(keep.sum())))
    return keep, leaks


def _estimate(
    spec: PrepareSpec,
    model_path: str,
    total_tokens: np.ndarray,
    assigned: list[str],
    registry: DatasetRegistry | None,
) -> dict[str, Any]:
    from tunesmith.data import estimate

    train_tokens = int(sum(t for t, s in zip(total_tokens.tolist(), assigned, strict=True) if s == "train"))
    speeds = estimate.cpu_run_speeds(registry.list_runs(500), spec.model, spec.method) if registry else []
    throughput = estimate.median_throughput(speeds)
    if throughput is None and spec.calibrate:
        speed = estimate.calibrate_throughput(model_path, spec.method)
        throughput = estimate.Throughput(speed, "calibration: a few training steps measured on this machine")
    parameters = estimate.count_parameters(Path(model_path)) if Path(model_path).is_dir() else 0
    gpus = estimate.load_gpu_prices(spec.gpu_prices)
    job = estimate.estimate_training(
        train_tokens * spec.epochs, parameters, spec.method, throughput, gpus, gradient_checkpointing=False
    )  # the step layout is `train`'s choice: a dry run adds checkpointing's slowdown when it is needed
    return estimate.cost_report(job, train_tokens, spec.epochs)
