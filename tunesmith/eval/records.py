"""The evaluation report as typed records, and the one way its numbers are written. No torch.

Owns: the shape of `report.json` (`EvalReport`: data, settings, one `ModelScores` per model with
each metric's `MetricInterval`, the paired `Comparison`s), `ScoredModel` (a model's predictions and
per-example statistics, what the report is computed from), and `format_number` / `format_interval`,
which the console table, `report.md` and `report.html` all use, so the three show the same digits.
Does not own: computing metrics or intervals (see `stats`, `report`) or rendering pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

# Every human-readable rendering of a report (console table, report.md, report.html) formats its numbers
# with `format_number` / `format_interval`; report.json keeps them whole.


@dataclass
class ScoredModel:
    """One model's outputs on the test set and each metric's per-example statistics."""

    name: str
    base_model: str
    adapter: str | None
    shots: int | None  # None: the test prompt as is; 0: zero-shot baseline; k: k demonstrations
    prompts: list[str]
    predictions: list[str]
    statistics: dict[str, np.ndarray]  # metric -> (N, K)
    seconds: float
    decoding: str  # how its answers were made: `Decoding.describe()`, or "label log-likelihood"
    out_of_scope_threshold: float | None = None  # classification: log-likelihood below which "none of these"


class _Record(BaseModel):
    # Reports written by earlier versions are read back (combine, judge): unknown keys are ignored.
    model_config = ConfigDict(extra="ignore")


class MetricInterval(_Record):
    value: float  # the metric on the full set
    ci_low: float
    ci_high: float


class ClassScores(_Record):
    precision: float
    recall: float
    f1: float
    support: float


class ModelScores(_Record):
    """One model's line of the report: what it is, each metric with its interval, its speed."""

    name: str
    base_model: str
    adapter: str | None
    shots: int | None = None  # absent from reports written before baselines had shots
    metrics: dict[str, MetricInterval]
    examples_per_second: float
    decoding: str | None = None  # how its answers were made; absent from reports written before beams
    per_class: dict[str, ClassScores] | None = None  # classification only
    confusion_matrix: list[list[int]] | None = None  # classification only: rows gold, columns predicted
    out_of_scope_threshold: float | None = None  # classification with an out-of-scope label only


class Comparison(_Record):
    """A later model against an earlier one on one metric: paired difference, interval, p-value."""

    model: str
    reference: str
    metric: str
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str  # a `stats.Verdict` value


class DataInfo(_Record):
    path: str
    hash: str  # sha256 of the examples: only evaluations of the same data are combined
    examples: int


class EvalSettings(_Record):
    max_new_tokens: int
    batch_size: int
    decoding: str  # this evaluation's `Decoding.describe()`, or "label log-likelihood" for classification
    bootstrap_samples: int
    confidence: float = 0.95  # of every interval


class EvalReport(_Record):
    """`report.json`: every metric of every model with its interval, and the paired comparisons."""

    created_at: str
    task: str
    data: DataInfo
    settings: EvalSettings
    models: list[ModelScores]
    comparisons: list[Comparison]
    labels: list[str] | None = None  # classification only
    out_of_scope_label: str | None = None  # classification: the label predicted below a model's threshold
    judge: dict[str, Any] | None = None  # added by `judge.judge_evaluation`; its shape is the judge's

    @property
    def metric_names(self) -> list[str]:
        """The metrics every model was scored on, in report order."""
        return list(self.models[0].metrics) if self.models else []

    def to_json(self) -> dict[str, Any]:
        """The report.json payload: sections a report lacks (labels, judge, per-class) are left out."""
        payload = self.model_dump(mode="json", exclude_none=False)
        for key in ("labels", "out_of_scope_label", "judge"):
            if payload[key] is None:
                del payload[key]
        for model in payload["models"]:
            for key in ("per_class", "confusion_matrix", "out_of_scope_threshold"):
                if model[key] is None:
                    del model[key]
        return payload


def _digits(value: float) -> int:
    """Decimals a report shows for a number of this size: 2 above 1.5 (BLEU, chrF), else 3 (0-1 scores)."""
    return 2 if abs(value) > 1.5 else 3


def format_number(value: float, *, signed: bool = False) -> str:
    """A report number as every rendering shows it (console, Markdown, HTML); `signed` for differences."""
    digits = _digits(value)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def format_interval(value: float, low: float, high: float, *, signed: bool = False) -> str:
    """`value [low, high]`, the bounds with the value's decimals."""
    digits = _digits(value)
    sign = "+" if signed else ""
    return f"{value:{sign}.{digits}f} [{low:{sign}.{digits}f}, {high:{sign}.{digits}f}]"
