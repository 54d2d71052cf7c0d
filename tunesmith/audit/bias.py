"""The bias audit: rewrite the test prompts, answer them with the model evaluation uses, report.

Owns: reading the test data (and its group column), answering originals and rewrites in one batch per
model through evaluation's own path (the same candidate loading, adapter switching, prompt rendering,
label log-likelihood or greedy generation as `tunesmith eval`), the judge's rubric scores, and the report
files. Does not own: resolving what was asked to be audited (the CLI), the findings and the gate
(`bias_findings`), the swaps (`counterfactual`), the training-data counts (`representation`) or the page
(`bias_html`).
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

from tunesmith.audit.bias_findings import AuditSettings, Pair, audit_models, build_pairs, require_pairs
from tunesmith.audit.bias_html import render_bias_html
from tunesmith.audit.counterfactual import Attribute
from tunesmith.audit.representation import representation_report
from tunesmith.config import ConfigError, DataFormat, EvalTask
from tunesmith.data.ingest import is_prepared_dataset, iter_records
from tunesmith.data.records import DataError, DataProblem, Example
from tunesmith.eval.classify import predict_labels
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
from tunesmith.eval.label_search import score_best_labels
from tunesmith.eval.tasks import detect_task
from tunesmith.models.loading import load_tokenizer, resolve_model
from tunesmith.train.rundir import atomic_write_text

BASE_NAME = "base"  # the base model's name in the report when it is audited beside a fine-tune


@dataclass(frozen=True)
class AuditTarget:
    """What is audited: a fine-tune (an adapter or a full model) or the base model itself."""

    name: str  # as the report names it: the run id, the adapter's name@version, or the base model
    base_model: str
    candidate: Candidate  # named `name`; Candidate(BASE_NAME) when the base model is audited
    run_id: str | None = None
    train_data: Path | None = None  # the run's training data, when it has one


def load_groups(path: Path, data_format: DataFormat | None, column: str) -> list[str]:
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


def audit_bias(
    target: AuditTarget,
    data: Path,
    out: Path,
    attributes: dict[str, Attribute],
    settings: AuditSettings,
    *,
    data_format: DataFormat | None = None,
    reference: Candidate | None = None,
    train_data: Path | None = None,
    group_column: str | None = None,
    limit: int | None = None,
    judge: tuple[Judge, dict[str, str]] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Audit `target` on the test data, write the report files to `out`, return `bias_report.json`'s payload.

    With a `reference` (the base model, `Candidate(BASE_NAME)`, or another fine-tune such as the champion a
    candidate would replace), it answers the same prompts and each measure is compared, target minus
    reference; the gate judges the target alone. `train_data` (default: the target's) gives the label set
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
    if judge is not None and labels is not None:
        raise ConfigError(
            "bias_audit.judge: a judge rates generated answers; this test data is classification"
        )
    candidates = [target.candidate, *([reference] if reference is not None else [])]
    outputs = answer_all(target.base_model, candidates, inputs, labels, settings, show_progress)
    judged = None
    if judge is not None:
        judged = {
            name: judge_answers(judge[0], judge[1], inputs, answers) for name, answers in outputs.items()
        }
    report = audit_models(outputs, examples, pairs, attributes, settings, audited=target.candidate.name, groups=groups,
                          judge_scores=judged)  # fmt: skip
    report |= {
        "target": {"name": target.name, "base_model": target.base_model, "run_id": target.run_id,
                   "adapter_dir": str(target.candidate.adapter_dir) if target.candidate.adapter_dir else None},
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
        scores = score_best_labels(
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
