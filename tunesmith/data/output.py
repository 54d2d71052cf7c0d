"""Writing a prepared dataset folder atomically, and the hashes that version it. No torch.

Owns: the folder layout (`train.jsonl`, `val.jsonl`, `test.jsonl`, `report.json`, `report.html`,
`dataset.json`), per-split and dataset content hashes, input file hashes, and replacing an earlier
prepared folder only once the new one is complete (the swap itself: see `swap`). Does not own: what
goes into the rows or report.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tunesmith.config import ConfigError
from tunesmith.data.ingest import MANIFEST, is_prepared_dataset
from tunesmith.data.split import SPLITS
from tunesmith.data.swap import recover_interrupted_swap, swap_folder


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_sha256(path: Path) -> str:
    """Hash of an input file, or of a folder's files (relative names and contents, in order)."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path)}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def write_dataset(
    out: Path,
    outputs: list[dict[str, Any]],
    assigned: list[str],
    report: dict[str, Any],
    lineage: dict[str, Any],
    *,
    kind: str,
    html: Callable[[dict[str, Any], Path], None],
) -> tuple[str, dict[str, int]]:
    """Write the folder from rows in memory (see `write_dataset_rows`); returns (hash, rows per split)."""
    lines = ((encode_row(row), split) for row, split in zip(outputs, assigned, strict=True))
    return write_dataset_rows(out, lines, lambda: (report, lineage), kind=kind, html=html)


def encode_row(row: dict[str, Any]) -> bytes:
    """A normalised row as its split file holds it (and the hashes cover it): one JSON line, keys sorted."""
    return (json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def write_dataset_rows(
    out: Path,
    lines: Iterable[tuple[bytes, str]],
    finish: Callable[[], tuple[dict[str, Any], dict[str, Any]]],
    *,
    kind: str,
    html: Callable[[dict[str, Any], Path], None],
) -> tuple[str, dict[str, int]]:
    """Write the folder in a staging directory, then swap it into place; returns (hash, rows per split).

    `lines` (each normalised row, as `encode_row` writes it, with its split) are streamed to the split
    files; `finish` is called once
    they are all written and gives the report and the lineage. A kill at any moment leaves `out` as it
    was or complete and new (see `swap`).

    The dataset hash covers every split's normalised rows (and which split each is in), so the same
    data prepared the same way hashes the same whatever the input file format.
    """
    recover_interrupted_swap(out)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        digests = {name: hashlib.sha256() for name in SPLITS}
        counts = dict.fromkeys(SPLITS, 0)
        handles = {name: (staging / f"{name}.jsonl").open("wb") for name in SPLITS}
        try:
            for data, split in lines:
                handles[split].write(data)
                digests[split].update(data)
                counts[split] += 1
        finally:
            for handle in handles.values():
                handle.close()
        splits: dict[str, dict[str, Any]] = {}
        dataset_digest = hashlib.sha256()
        for name in SPLITS:
            split_hash = digests[name].hexdigest()
            splits[name] = {"file": f"{name}.jsonl", "rows": counts[name], "hash": split_hash}
            dataset_digest.update(f"{name}:{split_hash}\n".encode())
        digest = dataset_digest.hexdigest()
        report, lineage = finish()
        report = {**report, "hash": digest}
        (staging / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
        html(report, staging / "report.html")
        manifest = {
            "hash": digest,
            "kind": kind,
            "created_at": datetime.now(UTC).isoformat(),
            "splits": splits,
            "rows": sum(counts.values()),
            "lineage": lineage,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
        swap_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the old folder, after a swap
    return digest, counts


def _check_target(out: Path) -> None:
    if out.exists() and not (out / MANIFEST).is_file() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out}: exists and is not a prepared dataset; choose another --out")


def inspect_dataset(path: Path) -> dict[str, Any]:
    """A summary of a prepared dataset folder: manifest, per-step counts, tokens and cost estimate."""
    if not is_prepared_dataset(path):
        raise FileNotFoundError(
            f"{path}: not a prepared dataset (no {MANIFEST}); see `tunesmith data prepare`"
        )
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    report = json.loads((path / "report.json").read_text(encoding="utf-8"))
    tokens = {key: value for key, value in report["tokens"].items() if key != "histogram"}
    estimate = report["estimate"]
    return {
        "path": str(path),
        "hash": manifest["hash"],
        "kind": manifest["kind"],
        "created_at": manifest["created_at"],
        "rows": manifest["rows"],
        "splits": {name: info["rows"] for name, info in manifest["splits"].items()},
        "inputs": manifest["lineage"]["inputs"],
        "steps": [
            {key: step[key] for key in ("name", "rows_in", "rows_out", "removed_by_reason", "changed")}
            for step in report["steps"]
        ],
        "tokens": tokens,
        "labels": len(report["labels"]),
        "leaks_removed": len(report["leaks"]),
        "estimate": {
            "total_tokens": estimate["total_tokens"],
            "cpu_minutes": estimate["cpu_minutes"],
            "gpus": {
                gpu["name"]: {"hours": gpu["hours"], "dollars": gpu["dollars"]} for gpu in estimate["gpus"]
            },
        },
    }
