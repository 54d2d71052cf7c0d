"""The stage cache: what each stage last ran on, and why a stage is stale. No torch.

Owns: `.tunesmith/stages.json` (per stage, the record of its last success: the hash of its inputs and
configuration, those inputs as flat keys so that a change can be named, its outputs and the identity
later stages read; and its last failure), reading it and writing it atomically, hashing inputs, and
turning two sets of inputs into the reasons a stage must rerun. Does not own: what a stage's inputs
are (`stages`) or the order stages run in (`pipeline`).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tunesmith.config import ConfigError
from tunesmith.train.rundir import atomic_write_text

CACHE_FILE = "stages.json"
CACHE_VERSION = 1
_SHOWN_CHANGES = 5  # reasons listed before "and N more"


class StageRecord(BaseModel):
    """A stage's last success."""

    model_config = ConfigDict(extra="forbid")

    key: str  # sha256 of `inputs`
    inputs: dict[str, Any]  # flat: `train.lr`, `upstream.prepare`, `file.data/examples.jsonl`
    outputs: dict[str, Any]  # what it made: paths, ids, figures for the summary
    identity: str  # what later stages hash: a dataset hash, a run id, an adapter version
    summary: str  # one line: what it made
    finished_at: str
    seconds: float


class StageFailure(BaseModel):
    """A stage's last failed attempt (cleared when it next succeeds)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    error: str
    at: str


class ProjectCache(BaseModel):
    """`stages.json`."""

    model_config = ConfigDict(extra="forbid")

    version: int = CACHE_VERSION
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    failures: dict[str, StageFailure] = Field(default_factory=dict)


def read_cache(state_dir: Path) -> ProjectCache:
    """The project's cache; an empty one before the first run."""
    path = state_dir / CACHE_FILE
    if not path.is_file():
        return ProjectCache()
    raw = json.loads(path.read_text(encoding="utf-8"))
    if raw.get("version") != CACHE_VERSION:
        raise ConfigError(
            f"{path}: written by another tunesmith (cache version {raw.get('version')}, this one reads "
            f"{CACHE_VERSION}); delete it and every stage reruns"
        )
    return ProjectCache.model_validate(raw)


def write_cache(state_dir: Path, cache: ProjectCache) -> None:
    """Replace `stages.json` in one rename: a killed run leaves the old file or the new one."""
    atomic_write_text(state_dir / CACHE_FILE, cache.model_dump_json(indent=2) + "\n")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys (`{"lora": {"r": 8}}` -> `{"lora.r": 8}`); values made JSON-plain."""
    flat: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{key}.")
        else:
            flat[key] = json.loads(json.dumps(value, default=str))
    return flat


def inputs_key(inputs: dict[str, Any]) -> str:
    """The content hash of a stage's inputs and configuration."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode("utf-8")).hexdigest()


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What differs between two sets of inputs, in words: `train.lr: 0.001 -> 0.0005`."""
    lines = []
    for key in sorted(before.keys() | after.keys()):
        if key in before and key in after and before[key] == after[key]:
            continue
        if key.startswith("upstream."):
            lines.append(f"{key.removeprefix('upstream.')}'s output changed")
        elif key.startswith("file."):
            lines.append(
                f"{key.removeprefix('file.')} {'changed' if key in before and key in after else 'added or removed'}"
            )
        elif key not in before:
            lines.append(f"{key}: new key ({_short(after[key])})")
        elif key not in after:
            lines.append(f"{key}: removed (was {_short(before[key])})")
        else:
            lines.append(f"{key}: {_short(before[key])} -> {_short(after[key])}")
    if len(lines) > _SHOWN_CHANGES:
        lines = [*lines[:_SHOWN_CHANGES], f"and {len(lines) - _SHOWN_CHANGES} more"]
    return lines


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 40 else text[:37] + "..."
