"""An evaluation's examples side by side (prompt, reference, each model's output), ordered by how much
the last model gained or lost against the first on one metric. No torch.

Owns: reading `predictions.jsonl` into rows, each example's score per model (the metric's aggregate
over that one example, as `eval.report_html` orders its extremes), the orders a page offers, and a
small cache keyed by the file's path and modification time, so paging through 1,000 examples reads and
scores the file once. Does not own: the file's shape (`eval.report`) or the metrics (`eval.tasks`).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import EvalTask
from tunesmith.eval.tasks import aggregates

ORDERS = ("worst", "best", "index")  # largest loss first, largest gain first, file order
_CACHE_SIZE = 8


@dataclass(frozen=True)
class Example:
    index: int
    prompt: str
    reference: str
    outputs: list[str]  # one per model, in the report's model order
    scores: list[float]  # the metric on this example, per model
    gain: float  # last model's score minus the first's (the score itself with one model)


@dataclass(frozen=True)
class ExampleTable:
    models: list[str]
    metric: str
    examples: list[Example]  # in file order

    def ordered(self, order: str) -> list[Example]:
        if order == "index":
            return self.examples
        # stable sorts: ties keep file order
        return sorted(self.examples, key=lambda example: example.gain, reverse=order == "best")


_cache: OrderedDict[tuple[str, int, str], ExampleTable] = OrderedDict()
_lock = threading.Lock()


def load_examples(out_dir: str, report: dict[str, Any], metric: str) -> ExampleTable | None:
    """The examples of the evaluation in `out_dir` scored on `metric`; None when the file is gone."""
    path = Path(out_dir) / "predictions.jsonl"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    key = (str(path), stamp, metric)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    table = _read(path, report, metric)
    with _lock:
        _cache[key] = table
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return table


def _read(path: Path, report: dict[str, Any], metric: str) -> ExampleTable:
    models = [model["name"] for model in report["models"]]
    labels = report.get("labels") or []
    out_of_scope = report.get("out_of_scope_label")
    aggregate = aggregates(
        EvalTask(report["task"]), [metric], len(labels), labels.index(out_of_scope) if out_of_scope else None
    )[metric]
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line:
            row = json.loads(line)
            rows.setdefault(row["index"], {})[row["model"]] = row
    examples = []
    for index in sorted(rows):
        by_model = rows[index]
        first = next(iter(by_model.values()))
        scores = [
            float(aggregate(np.array([by_model[name]["statistics"][metric]])))
            if name in by_model
            else float("nan")
            for name in models
        ]
        examples.append(
            Example(
                index=index, prompt=first["prompt"], reference=first["reference"],
                outputs=[by_model[name]["prediction"] if name in by_model else "" for name in models],
                scores=scores, gain=scores[-1] - scores[0] if len(scores) > 1 else scores[0],
            )
        )  # fmt: skip
    return ExampleTable(models=models, metric=metric, examples=examples)
