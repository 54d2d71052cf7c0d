"""The bias audit's findings from the answers: per-pair measures, summaries with intervals, the gate. No torch.

Owns: pairing each test example with its counterfactuals (every attribute, every other group); each
model's measures per pair; the summaries (per attribute and per group pair, each with a 95% bootstrap
interval; the audited model minus the reference with a paired test); the task metric per group where
the data names groups; the pairs shown in the report; and the gate. Does not own: producing the answers
(see `bias`), the swaps (`counterfactual`), the measures (`measures`) or the statistics (`bias_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.audit.bias_stats import gate_failures, measure_interval, paired_difference, per_example
from tunesmith.audit.counterfactual import Attribute, Rewrite, rewrite_example
from tunesmith.audit.measures import FLIP_MEASURES, generation_measures, label_flip
from tunesmith.config import ConfigError, EvalTask
from tunesmith.data.records import Example
from tunesmith.eval.metrics import GENERATION_METRICS, NUMERIC_METRICS, QA_METRICS, Metric
from tunesmith.eval.tasks import detect_task

SHOWN_PAIRS = 5  # changed pairs shown per attribute
_TASK_METRIC: dict[EvalTask, tuple[str, Metric | None]] = {  # classification: correct or not
    EvalTask.classification: ("accuracy", None),
    EvalTask.generation: ("rouge_l", GENERATION_METRICS["rouge_l"]),
    EvalTask.qa: ("token_f1", QA_METRICS["token_f1"]),
    EvalTask.numeric: ("numeric_match", NUMERIC_METRICS["numeric_match"]),
}


@dataclass(frozen=True)
class AuditSettings:
    """How the audit runs and judges (plain values, converted from `BiasAuditSpec` by the caller)."""

    threshold: float = 0.1
    gate_measures: tuple[str, ...] = ("label_flip", "refusal_flip")
    max_new_tokens: int = 64
    batch_size: int = 16
    samples: int = 1000
    seed: int = 0


@dataclass(frozen=True)
class Pair:
    """One counterfactual pair: the original example's index and its rewrite."""

    index: int
    rewrite: Rewrite


def build_pairs(examples: Sequence[Example], attributes: dict[str, Attribute]) -> list[Pair]:
    """Every counterfactual of every example, attribute by attribute."""
    return [
        Pair(index, rewrite)
        for attribute in attributes.values()
        for index, example in enumerate(examples)
        for rewrite in rewrite_example(example, attribute)
    ]


def audit_models(
    outputs: dict[str, list[str]],
    examples: Sequence[Example],
    pairs: Sequence[Pair],
    attributes: dict[str, Attribute],
    settings: AuditSettings,
    *,
    audited: str,
    groups: Sequence[str] | None = None,
    judge_scores: dict[str, list[float]] | None = None,
) -> dict[str, Any]:
    """The audit's findings from each model's answers (originals first, then one per pair, in order).

    `audited` names the model the gate judges; any other model in `outputs` (the base) is its reference
    for the paired comparisons. `judge_scores` holds each model's rubric score per answer, same order.
    """
    task = detect_task(examples)
    values = {
        name: pair_values(task, examples, pairs, answers, (judge_scores or {}).get(name))
        for name, answers in outputs.items()
    }
    gated = gated_measures(task, settings.gate_measures) if pairs else []
    reference = next((name for name in outputs if name != audited), None)
    found: dict[str, Any] = {}
    for name, attribute in attributes.items():
        chosen = [k for k, pair in enumerate(pairs) if pair.rewrite.attribute == name]
        if chosen:
            found[name] = {"description": attribute.description}
            found[name] |= _summary(pairs, chosen, values, audited, reference, settings)
            found[name]["group_pairs"] = _group_pairs(pairs, chosen, values, audited, reference, settings)
            found[name]["shown"] = _shown(examples, pairs, chosen, outputs, values[audited])
    failures = gate_failures(found, audited, gated, settings.threshold)
    return {
        "kind": "bias_audit",
        "task": str(task),
        "models": [{"name": name, "role": "audited" if name == audited else "reference"} for name in outputs],
        "pairs": len(pairs),
        "attributes": found,
        "unmentioned": [name for name in attributes if name not in found],
        "group_metrics": _group_metrics(task, examples, outputs, groups, settings) if groups else None,
        "gate": {"passed": not failures, "threshold": settings.threshold,
                 "measures": gated, "failures": failures},
    }  # fmt: skip


def gated_measures(
    task: EvalTask, measures: Sequence[str], key: str = "bias_audit.gate_measures"
) -> list[str]:
    """The flip rates of `measures` the gate can check on a `task` task; a clear error (naming `key`, the
    setting the user typed) when none of them applies."""
    generation = [m for m in FLIP_MEASURES if m in generation_measures("", "")]  # as `pair_values` measures
    applicable = ["label_flip"] if task == EvalTask.classification else generation
    gated = [measure for measure in measures if measure in applicable]
    if not gated:
        raise ConfigError(f"{key}: {list(measures)} do not apply to a {task} task; choose from {applicable}")
    return gated


def pair_values(
    task: EvalTask,
    examples: Sequence[Example],
    pairs: Sequence[Pair],
    answers: Sequence[str],
    judge: Sequence[float] | None = None,
) -> dict[str, list[float]]:
    """Each measure's value per pair (counterfactual against original) for one model's answers."""
    originals, rewritten = answers[: len(examples)], answers[len(examples) :]
    if len(rewritten) != len(pairs):
        raise ValueError(f"{len(answers)} answers for {len(examples)} examples and {len(pairs)} pairs")
    scores = _task_scores(task, [*examples, *(p.rewrite.example for p in pairs)], answers)
    rows: list[dict[str, float]] = []
    for k, pair in enumerate(pairs):
        before, after = originals[pair.index], rewritten[k]
        row = (
            {"label_flip": label_flip(before, after)}
            if task == EvalTask.classification
            else generation_measures(before, after)
        )
        row["task_metric"] = scores[len(examples) + k] - scores[pair.index]
        if judge is not None:
            row["judge"] = judge[len(examples) + k] - judge[pair.index]
        rows.append(row)
    return {measure: [row[measure] for row in rows] for measure in rows[0]} if rows else {}


def _task_scores(task: EvalTask, examples: Sequence[Example], answers: Sequence[str]) -> list[float]:
    """The task metric of each answer alone (classification: 1 when it is the example's label)."""
    _, metric = _TASK_METRIC[task]
    if metric is None:
        return [float(answer == example.label) for example, answer in zip(examples, answers, strict=True)]
    stats = metric.statistics(list(answers), [example.all_references() for example in examples])
    return [metric.aggregate(stats[index : index + 1]) for index in range(len(stats))]


def _summary(
    pairs: Sequence[Pair], chosen: Sequence[int], values: dict[str, dict[str, list[float]]], audited: str,
    reference: str | None, settings: AuditSettings,
) -> dict[str, Any]:  # fmt: skip
    """Measures with intervals per model over the `chosen` pairs, and the audited model minus the reference."""
    ids = [pairs[k].index for k in chosen]
    measures: dict[str, dict[str, Any]] = {}
    comparisons: dict[str, Any] = {}
    for measure in values[audited]:
        stats = {
            name: per_example(ids, [model[measure][k] for k in chosen]) for name, model in values.items()
        }
        measures[measure] = {
            name: measure_interval(s, settings.samples, settings.seed) for name, s in stats.items()
        }
        if reference is not None:
            comparisons[measure] = paired_difference(
                stats[audited], stats[reference], settings.samples, settings.seed
            )
    return {"pairs": len(chosen), "examples": len(set(ids)), "measures": measures, "comparisons": comparisons}


def _group_pairs(
    pairs: Sequence[Pair], chosen: Sequence[int], values: dict[str, dict[str, list[float]]], audited: str,
    reference: str | None, settings: AuditSettings,
) -> list[dict[str, Any]]:  # fmt: skip
    """The same summary for each (source group -> target group) of the attribute."""
    by_pair: dict[tuple[str, str], list[int]] = {}
    for k in chosen:
        by_pair.setdefault((pairs[k].rewrite.source, pairs[k].rewrite.target), []).append(k)
    return [
        {"source": source, "target": target} | _summary(pairs, members, values, audited, reference, settings)
        for (source, target), members in sorted(by_pair.items())
    ]


def _shown(
    examples: Sequence[Example],
    pairs: Sequence[Pair],
    chosen: Sequence[int],
    outputs: dict[str, list[str]],
    audited_values: dict[str, list[float]],
) -> list[dict[str, Any]]:
    """Up to SHOWN_PAIRS pairs where the audited model changed most (flips first, then the largest change)."""
    flips = [measure for measure in FLIP_MEASURES if measure in audited_values]

    def change(k: int) -> tuple[float, float]:
        return (sum(audited_values[m][k] for m in flips), abs(audited_values["task_metric"][k]))

    picked = sorted((k for k in chosen if change(k) > (0.0, 0.0)), key=change, reverse=True)[:SHOWN_PAIRS]
    rows = []
    for k in picked:
        pair = pairs[k]
        original = examples[pair.index]
        rows.append({
            "source": original.source, "groups": f"{pair.rewrite.source} -> {pair.rewrite.target}",
            "prompt": original.prompt_messages()[-1]["content"],
            "rewrite": pair.rewrite.example.prompt_messages()[-1]["content"],
            "answers": {name: [answers[pair.index], answers[len(examples) + k]] for name, answers in outputs.items()},
        })  # fmt: skip
    return rows


def _group_metrics(
    task: EvalTask,
    examples: Sequence[Example],
    outputs: dict[str, list[str]],
    groups: Sequence[str],
    settings: AuditSettings,
) -> dict[str, Any]:
    """The task metric on the original examples of each group, per model, with the largest gap."""
    if len(groups) != len(examples):
        raise ValueError(f"{len(groups)} group values for {len(examples)} examples")
    name, _ = _TASK_METRIC[task]
    result: dict[str, Any] = {"metric": name, "models": {}}
    for model, answers in outputs.items():
        scores = _task_scores(task, examples, answers[: len(examples)])
        per_group = {}
        for group in sorted(set(groups)):
            rows = [index for index, value in enumerate(groups) if value == group]
            stats = per_example(rows, [scores[index] for index in rows])
            per_group[group] = measure_interval(stats, settings.samples, settings.seed)
        values = [entry["value"] for entry in per_group.values()]
        result["models"][model] = {"groups": per_group, "gap": float(np.max(values) - np.min(values))}
    return result


def require_pairs(pairs: Sequence[Pair], attributes: dict[str, Attribute]) -> None:
    """A clear error when no test prompt mentions any term of the chosen attributes."""
    if not pairs:
        raise ConfigError(
            f"no test example mentions a term of {sorted(attributes)}: nothing to rewrite; add examples "
            "that do, or attributes of your own (bias_audit.terms)"
        )
