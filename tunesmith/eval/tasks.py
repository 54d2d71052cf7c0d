"""Task types: detecting one from the data, and the metrics each task computes.

Owns: the detection rule (classification when examples carry labels; numeric when every reference
ends in `#### <number>`; else generation; QA only when asked), the default and optional metrics per
task, and the aggregates that turn stored per-example statistics back into metrics. Does not own:
the metric definitions (see `metrics`, `coco`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tunesmith.config import ConfigError, EvalTask
from tunesmith.data.records import Example
from tunesmith.eval.coco import COCO_METRICS
from tunesmith.eval.metrics import (
    GENERATION_METRICS,
    NUMERIC_METRICS,
    QA_METRICS,
    Metric,
    classification_metrics,
    is_numeric_reference,
    out_of_scope_metrics,
)
from tunesmith.eval.stats import Aggregate

_TEXT_METRICS: dict[EvalTask, dict[str, Metric]] = {
    EvalTask.generation: {**GENERATION_METRICS, **COCO_METRICS},
    EvalTask.qa: QA_METRICS,
    EvalTask.numeric: {**NUMERIC_METRICS, "exact_match": QA_METRICS["exact_match"]},
}
_DEFAULTS: dict[EvalTask, list[str]] = {
    EvalTask.classification: ["accuracy", "macro_precision", "macro_recall", "macro_f1"],
    EvalTask.generation: list(GENERATION_METRICS),
    EvalTask.qa: list(QA_METRICS),
    EvalTask.numeric: list(NUMERIC_METRICS),
}


def detect_task(examples: Sequence[Example]) -> EvalTask:
    """Classification when every example carries a label; numeric for `#### n` answers; else generation."""
    if examples and all(example.label is not None for example in examples):
        return EvalTask.classification
    if examples and all(is_numeric_reference(example.reference()) for example in examples):
        return EvalTask.numeric
    return EvalTask.generation


_OUT_OF_SCOPE = ["in_scope_accuracy", "out_of_scope_recall"]  # classification with an out-of-scope label


def metric_names(task: EvalTask, requested: Sequence[str] | None, *, out_of_scope: bool = False) -> list[str]:
    """The metrics to compute: the task's defaults, or the requested ones after checking they apply.

    `out_of_scope`: classification with an out-of-scope label, which adds in-scope accuracy and
    out-of-scope recall.
    """
    extra = _OUT_OF_SCOPE if out_of_scope and task == EvalTask.classification else []
    if requested is None:
        return list(_DEFAULTS[task]) + extra
    known = list(_DEFAULTS[task]) + extra if task == EvalTask.classification else list(_TEXT_METRICS[task])
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise ConfigError(f"eval.metrics: {unknown} do not apply to a {task} task; choose from {known}")
    return list(requested)


def text_metrics(task: EvalTask, names: Sequence[str]) -> dict[str, Metric]:
    """The metric objects of a text task (generation, qa, numeric)."""
    return {name: _TEXT_METRICS[task][name] for name in names}


def aggregates(
    task: EvalTask, names: Sequence[str], num_labels: int, out_of_scope: int | None = None
) -> dict[str, Aggregate]:
    """How to turn each metric's per-example statistics into its value.

    `out_of_scope`: classification's out-of-scope label, by index, when it has one.
    """
    if task == EvalTask.classification:
        table = classification_metrics(num_labels)
        if out_of_scope is not None:
            table |= out_of_scope_metrics(out_of_scope)
        return {name: table[name] for name in names}
    return {name: metric.aggregate for name, metric in text_metrics(task, names).items()}
