"""Data preparation: `PrepareSpec` (`tunesmith data prepare`, a project's `data:`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tunesmith.config.base import (
    DEFAULT_MODEL,
    DataFormat,
    _Spec,
)


class PrepareSpec(_Spec):
    """Turning raw data files into a versioned train/val/test dataset with a report."""

    inputs: list[Path] = Field(
        ...,
        min_length=1,
        description="Data files or folders (JSONL, JSON, CSV, Parquet, saved datasets, docs).",
    )
    out: Path = Field(..., description="Output folder for the splits, report and manifest.")
    format: DataFormat | None = Field(None, description="Example form; detected from the columns when unset.")
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Columns to read under the names the form expects: FIELD=COLUMN, e.g. instruction=question "
        "(in YAML a mapping, instruction: question).",
    )
    instruction: str | None = Field(
        None, description="Instruction for classification rows (text/label); a built-in default when unset."
    )
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="Invalid rows stop the run (fail) or are skipped and listed in the report (skip)."
    )
    fix_unicode: bool = Field(True, description="Repair mojibake and broken escapes (ftfy).")
    strip_html: bool = Field(True, description="Remove HTML tags (scripts and styles with their content).")
    normalize_whitespace: bool = Field(True, description="Trim lines, collapse space runs and blank lines.")
    boilerplate_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Remove lines (20+ chars) repeated in at least this share of rows; 0: off.",
    )
    model: str = Field(
        DEFAULT_MODEL, description="Target model: its tokenizer and chat template count tokens."
    )
    min_tokens: int = Field(0, ge=0, description="Drop examples with fewer rendered tokens.")
    max_tokens: int | None = Field(
        None, gt=0, description="Drop examples with more rendered tokens; default the model's context length."
    )
    dedup: bool = Field(True, description="Drop exact duplicates (after case and whitespace normalisation).")
    near_dup_threshold: float | None = Field(
        0.8,
        gt=0,
        le=1,
        description="Jaccard similarity (MinHash) above which rows are near-duplicates; None: off.",
    )
    pii: Literal["report", "redact", "drop"] = Field(
        "redact",
        description="Personal data: only count it, replace it with [EMAIL]-style tags, or drop the row.",
    )
    split: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15),
        description="Train/val/test shares, normalised to sum to 1: 70/15/15 by default, 80/10 for no test split "
        "(in YAML a list, [0.7, 0.15, 0.15]).",
    )
    seed: int = Field(42, description="Seed for the split.")
    group_by: str | None = Field(
        None, description="Column whose rows stay in one split (e.g. conversation_id)."
    )
    stratify: bool = Field(True, description="Keep label proportions equal across splits (classification).")
    leakage_threshold: float = Field(
        0.8, gt=0, le=1, description="Prompt similarity above which a val/test row leaks from another split."
    )
    num_proc: int | None = Field(
        None,
        ge=1,
        description="Worker processes for the per-row steps (cleaning, personal data, token counts, MinHash); "
        "default one per CPU. The output is the same for any number.",
    )
    epochs: float = Field(3.0, gt=0, description="Epochs assumed by the cost estimate.")
    method: Literal["lora", "full"] = Field(
        "lora", description="Training method assumed by the cost estimate."
    )
    calibrate: bool = Field(
        True, description="Measure CPU training speed (a few steps) when the registry has no earlier run."
    )
    gpu_prices: Path | None = Field(None, description="YAML table of GPU prices; default the built-in one.")
