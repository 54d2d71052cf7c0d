"""The bias audit: rewrite the test prompts, answer them with the model evaluation uses, compare, interval.

Owns: pairing each test example with its counterfactuals (every attribute, every other group), answering
originals and rewrites in one batch per model through evaluation's own path (the same candidate
loading, adapter switching, prompt rendering, label log-likelihood or greedy generation as `tunesmith
eval`), the per-pair measures of each model, the summaries (per attribute and per group pair, each
with a 95% bootstrap interval; the audited model minus the base with a paired test), the task metric
per group where the data names groups, the gate, and the report files. Does not own: the term lists and
swaps (`counterfactual`), the measures (`measures`), the statistics (`bias_stats`), the training-data
counts (`representation`), the page (`bias_html`) or resolving what was asked to be audited (the CLI).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tunesmith.audit.bias_html import render_bias_html
from tunesmith.audit.bias_stats import gate_failures, measure_interval, paired_difference, per_example
from tunesmith.audit.counterfactual import Attribute, Rewrite, rewrite_example
from tunesmith.audit.measures import FLIP_MEASURES, generation_measures, label_flip
from tunesmith.audit.representation import representation_report
from tunesmith.config import ConfigError, DataFormat, EvalTask
from tunesmith.data.ingest import is_prepared_dataset, iter_records
from tunesmith.data.records import DataError, DataProblem, Example
from tunesmith.eval.classify import predict_labels, score_labels
from tunesmith.eval.evaluate import (
    Candidate,
    activate,
    candidate_prompts,
    group_by_model,
    label_set,
    load_eval_examples,
    load_group,
)
from tunesmith.eval.generate import GREEDY, generate_batched
from tunesmith.eval.judge import Judge, rubric_scores
from tunesmith.eval.metrics import GENERATION_METRICS, NUMERIC_METRICS, QA_METRICS, Metric
from tunesmith.eval.tasks import detect_task
from tunesmith.models.loading import load_tokenizer, resolve_model
from tunesmith.train.rundir import atomic_write_text

BASE_NAME = "base"  # the base model's name in the report when it is audited beside a fine-tune
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
class AuditTarget:
    """What is audited: a fine-tune (an adapter or a full model) or the base model itself."""

    name: str  # as the report names it: the run id, the adapter's name@version, or the base model
    base_model: str
    candidate: Candidate  # named `name`; Candidate(BASE_NAME) when the base model is audited
    run_id: str | None = None
    train_data: Path | None = None  # the run's training data, when it has one


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


def load_groups(path: Path, data_format: Any, column: str) -> list[str]:
    """Each example's value in `column` (a prepared folder's test split), in `load_examples` order."""
    file = path / "test.jsonl" if is_prepared_dataset(path) else path
    groups, problems = [], []
    for location, row, record in iter_records(file, data_format):
        if isinstance(record, DataProblem):
            continue  # reading the examples reports it
        value = row.get(column) if isinstance(row, dict) else None
        if value is None or not str(value).strip():
            problems.append(DataProblem(location, f"no '{column}' value (the group column)"))
        else:
            groups.append(str(value))
    if problems:
        raise DataError(problems)
    return groups


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
    reference = next((name for name in outputs if name != audited), None)
    found: dict[str, Any] = {}
    for name, attribute in attributes.items():
        chosen = [k for k, pair in enumerate(pairs) if pair.rewrite.attribute == name]
        if chosen:
            found[name] = {"description": attribute.description}
            found[name] |= _summary(pairs, chosen, values, audited, reference, settings)
            found[name]["group_pairs"] = _group_pairs(pairs, chosen, values, audited, reference, settings)
            found[name]["shown"] = _shown(examples, pairs, chosen, outputs, values[audited])
    failures = gate_failures(found, audited, settings.gate_measures, settings.threshold)
    return {
        "kind": "bias_audit",
        "task": str(task),
        "models": [{"name": name, "role": "audited" if name == audited else "reference"} for name in outputs],
        "pairs": len(pairs),
        "attributes": found,
        "unmentioned": [name for name in attributes if name not in found],
        "group_metrics": _group_metrics(task, examples, outputs, groups, settings) if groups else None,
        "gate": {"passed": not failures, "threshold": settings.threshold,
                 "measures": list(settings.gate_measures), "failures": failures},
    }  # fmt: skip


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


def judge_answers(
    judge: Judge, criteria: dict[str, str], prompts: Sequence[Example], answers: Sequence[str]
) -> list[float]:
    """Each answer's mean rubric score over the criteria (1-5; the scale's middle where unparseable)."""
    questions = [example.prompt_messages()[-1]["content"] for example in prompts]
    references = [example.reference() for example in prompts]
    scores = rubric_scores(judge, criteria, questions, answers, references)
    table = np.array([[3.0 if s is None else float(s) for s in column] for column in scores.values()])
    return [float(value) for value in table.mean(axis=0)]


def write_bias_report(report: dict[str, Any], pairs_rows: list[dict[str, Any]], html: str, out: Path) -> None:
    """bias_report.json, bias_report.html and bias_pairs.jsonl (every pair, every answer), each atomically."""
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in pairs_rows)
    atomic_write_text(out / "bias_pairs.jsonl", lines)
    atomic_write_text(out / "bias_report.html", html)
    atomic_write_text(out / "bias_report.json", json.dumps(report, indent=2) + "\n")


def require_pairs(pairs: Sequence[Pair], attributes: dict[str, Attribute]) -> None:
    """A clear error when no test prompt mentions any term of the chosen attributes."""
    if not pairs:
        raise ConfigError(
            f"no test example mentions a term of {sorted(attributes)}: nothing to rewrite; add examples "
            "that do, or attributes of your own (bias_audit.terms)"
        )


def audit_bias(
    target: AuditTarget,
    data: Path,
    out: Path,
    attributes: dict[str, Attribute],
    settings: AuditSettings,
    *,
    data_format: DataFormat | None = None,
    baseline: bool = True,
    train_data: Path | None = None,
    group_column: str | None = None,
    limit: int | None = None,
    judge: tuple[Judge, dict[str, str]] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Audit `target` on the test data, write the report files to `out`, return `bias_report.json`'s payload.

    With `baseline` (and a fine-tune as the target), the base model answers the same prompts and each
    measure is compared, fine-tune minus base. `train_data` (default: the target's) gives the label set
    and the representation report; `judge` (a judge and its rubric) adds rubric score differences.
    """
    examples, digest = load_eval_examples(data, data_format, "test")
    examples = examples[:limit]
    groups = load_groups(data, data_format, group_column)[: len(examples)] if group_column else None
    train_path = train_data or target.train_data
    train = load_eval_examples(train_path, data_format, "train")[0] if train_path else None
    pairs = build_pairs(examples, attributes)
    require_pairs(pairs, attributes)
    inputs = [*examples, *(pair.rewrite.example for pair in pairs)]
    task = detect_task(examples)
    labels = label_set(examples, train, None) if task == EvalTask.classification else None
    candidates = [target.candidate]
    if baseline and target.candidate.name != BASE_NAME:
        candidates.append(Candidate(BASE_NAME))
    outputs = answer_all(target.base_model, candidates, inputs, labels, settings, show_progress)
    judged = None
    if judge is not None and labels is None:
        judged = {
            name: judge_answers(judge[0], judge[1], inputs, answers) for name, answers in outputs.items()
        }
    report = audit_models(outputs, examples, pairs, attributes, settings, audited=target.candidate.name, groups=groups,
                          judge_scores=judged)  # fmt: skip
    report |= {
        "target": {"name": target.name, "base_model": target.base_model, "run_id": target.run_id},
        "data": {"path": str(data), "hash": digest, "examples": len(examples)},
        "labels": labels,
        "settings": {"bootstrap_samples": settings.samples, "seed": settings.seed,
                     "max_new_tokens": settings.max_new_tokens, "decoding": "label log-likelihood" if labels else "greedy"},
        "representation": representation_report(train, attributes) if train else None,
    }  # fmt: skip
    rows = _pair_rows(examples, pairs, outputs)
    write_bias_report(report, rows, render_bias_html(report), out)
    return report


def answer_all(
    base_model: str,
    candidates: list[Candidate],
    inputs: list[Example],
    labels: list[str] | None,
    settings: AuditSettings,
    show_progress: bool,
) -> dict[str, list[str]]:
    """Each candidate's answer to every input, as `tunesmith eval` makes them: the label with the highest
    log-likelihood (classification), else greedy generation."""
    outputs: dict[str, list[str]] = {}
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not show_progress,
    )  # fmt: skip
    with progress:
        for model_name, group in group_by_model(base_model, candidates).items():
            model_path = resolve_model(model_name)
            tokenizer = load_tokenizer(model_path)
            model = load_group(model_path, group)
            for candidate in group:
                advance = partial(
                    progress.advance, progress.add_task(f"bias audit: {candidate.name}", total=len(inputs))
                )
                prompts = candidate_prompts(tokenizer, candidate, None, labels, inputs)
                with activate(model, candidate):
                    outputs[candidate.name] = _answer(model, tokenizer, prompts, labels, settings, advance)
            del model
    return outputs


def _answer(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    labels: list[str] | None,
    settings: AuditSettings,
    advance: Callable[[int], None],
) -> list[str]:
    if labels is not None:
        scores = score_labels(
            model, tokenizer, prompts, labels, batch_size=settings.batch_size, on_batch=advance
        )
        return [labels[index] for index in predict_labels(scores)]
    return generate_batched(
        model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
        decoding=GREEDY, on_batch=advance,
    )  # fmt: skip


def _pair_rows(
    examples: Sequence[Example], pairs: Sequence[Pair], outputs: dict[str, list[str]]
) -> list[dict[str, Any]]:
    return [
        {
            "attribute": pair.rewrite.attribute,
            "source_group": pair.rewrite.source,
            "target_group": pair.rewrite.target,
            "example": examples[pair.index].source,
            "prompt": examples[pair.index].prompt_messages()[-1]["content"],
            "rewrite": pair.rewrite.example.prompt_messages()[-1]["content"],
            "answers": {
                name: [answers[pair.index], answers[len(examples) + k]] for name, answers in outputs.items()
            },
        }  # fmt: skip
        for k, pair in enumerate(pairs)
    ]
