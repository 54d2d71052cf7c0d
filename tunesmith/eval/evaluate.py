"""Evaluation: baselines and candidates on one held-out set, scored with intervals and compared.

Owns: loading each distinct model once (adapters switched on one base; the base itself is scored with
adapters disabled, so no second copy is in memory), building each candidate's prompts (as is, or
as a zero-/few-shot baseline), predicting (batched generation, greedy, beam search or sampled, or label
log-likelihood for classification: the best label found exactly by `label_search`'s branch and bound, with a "none of these" threshold calibrated per model when there is
an out-of-scope label), per-example statistics, and handing them to `report` for intervals, comparisons
and files. Does not own: the metric definitions, the statistics or the registry (the caller records
the report).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tunesmith.config import ConfigError, DataFormat, EvalTask
from tunesmith.data.ingest import is_prepared_dataset, load_examples, load_split
from tunesmith.data.records import Example, dataset_hash
from tunesmith.data.render import render_text
from tunesmith.eval.baselines import baseline_messages, classification_instruction, select_shots
from tunesmith.eval.classify import OutOfScopeObjective, calibrate_out_of_scope, predict_labels
from tunesmith.eval.coco import check_available
from tunesmith.eval.generate import GREEDY, Decoding, generate_batched
from tunesmith.eval.label_search import score_best_labels
from tunesmith.eval.metrics import classification_statistics
from tunesmith.eval.records import DataInfo, EvalSettings, ScoredModel
from tunesmith.eval.report import build_report, write_report
from tunesmith.eval.tasks import detect_task, metric_names, text_metrics
from tunesmith.lora import use_lora_forwards
from tunesmith.models.loading import (
    default_device,
    load_model,
    load_tokenizer,
    resolve_model,
    supports_fast_bf16,
)


@dataclass(frozen=True)
class Candidate:
    """One model to score.

    The base model (`adapter_dir` and `model` None), a LoRA adapter on it, or another full model
    (a fully fine-tuned run). `shots` None uses each test prompt as is (fine-tuned models); 0 is the
    zero-shot baseline (for classification, an instruction naming the labels is added); k > 0 puts k
    training examples before the prompt.
    """

    name: str
    adapter_dir: Path | None = None
    model: str | None = None
    shots: int | None = None


@dataclass(frozen=True)
class OutOfScope:
    """Classification's "none of these": the label it is written as, and the labelled validation
    examples (some of them out of scope) each model's threshold is calibrated on."""

    label: str
    calibration: list[Example]
    objective: OutOfScopeObjective = "balanced"  # what the threshold maximises (`calibrate_out_of_scope`)


def baseline_candidates(shots: int) -> list[Candidate]:
    """The base model zero-shot and k-shot."""
    return [Candidate("base zero-shot", shots=0), Candidate(f"base {shots}-shot", shots=shots)]


def load_eval_examples(path: Path, data_format: DataFormat | None, split: str) -> tuple[list[Example], str]:
    """Examples of a file or a prepared dataset folder's split, with the dataset version hash."""
    if data_format is None:
        examples, digest = load_split(path, split)
    else:
        examples, digest = load_examples(path, data_format), None
    return examples, digest or dataset_hash(examples)


def evaluate_generation(
    base_model: str,
    candidates: list[Candidate],
    data: Path,
    out: Path,
    *,
    data_format: DataFormat | None = None,
    train_data: Path | None = None,
    task: EvalTask | None = None,
    metrics: list[str] | None = None,
    max_new_tokens: int = 128,
    decoding: Decoding = GREEDY,
    out_of_scope_label: str | None = None,
    calibration_data: Path | None = None,
    out_of_scope_objective: OutOfScopeObjective = "balanced",
    batch_size: int = 16,
    limit: int | None = None,
    samples: int = 1000,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Read the test file (and the training file for few-shot and labels), then `evaluate_models`.

    With `out_of_scope_label`, thresholds are calibrated on `calibration_data` (default: the val split of
    `data` when it is a prepared dataset folder).
    """
    examples, digest = load_eval_examples(data, data_format, "test")
    train = load_eval_examples(train_data, data_format, "train")[0] if train_data else None
    examples = examples[:limit]
    out_of_scope = None
    if out_of_scope_label is not None:
        source = calibration_data or (data if is_prepared_dataset(data) else None)
        if source is None:
            raise ConfigError(
                "eval.out_of_scope_label: the threshold is calibrated on labelled validation examples, some "
                "of them out of scope; give calibration_data (--calibration-data)"
            )
        calibration = load_eval_examples(source, data_format, "val")[0]
        out_of_scope = OutOfScope(out_of_scope_label, calibration, out_of_scope_objective)
    return evaluate_models(
        base_model,
        candidates,
        examples,
        out,
        data_info=DataInfo(path=str(data), hash=digest, examples=len(examples)),
        train_examples=train,
        task=task,
        metrics=metrics,
        max_new_tokens=max_new_tokens,
        decoding=decoding,
        out_of_scope=out_of_scope,
        batch_size=batch_size,
        samples=samples,
        show_progress=show_progress,
    )


def evaluate_models(
    base_model: str,
    candidates: list[Candidate],
    examples: list[Example],
    out: Path,
    *,
    data_info: DataInfo | None = None,
    train_examples: list[Example] | None = None,
    task: EvalTask | None = None,
    metrics: list[str] | None = None,
    max_new_tokens: int = 128,
    decoding: Decoding = GREEDY,
    out_of_scope: OutOfScope | None = None,
    batch_size: int = 16,
    samples: int = 1000,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Score every candidate on `examples`, write the report files to `out`, return `report.json`'s payload.

    Classification takes its label set from `train_examples` (else from the test set) and predicts the
    label with the highest log-likelihood; with `out_of_scope`, a prediction below the model's calibrated
    threshold is its label instead (which need not be a training label). Other tasks generate with
    `decoding` (greedy by default). Few-shot candidates draw their demonstrations from `train_examples`.
    """
    if not examples:
        raise ValueError("no test examples to evaluate")
    resolved = task or detect_task(examples)
    if out_of_scope is not None and resolved != EvalTask.classification:
        raise ConfigError(f"eval.out_of_scope_label applies to classification, not to a {resolved} task")
    names = metric_names(resolved, metrics, out_of_scope=out_of_scope is not None)
    check_available(names)  # a missing Java runtime is reported before minutes of generation, not after
    oos_label = out_of_scope.label if out_of_scope else None
    labels = label_set(examples, train_examples, oos_label) if resolved == EvalTask.classification else None
    # Reported labels: the scored ones, and the out-of-scope label after them when it is not one of them.
    report_labels = labels + [oos_label] if labels and oos_label and oos_label not in labels else labels
    if any(c.shots for c in candidates) and not train_examples:
        raise ConfigError("a few-shot baseline needs training data to draw demonstrations from (train_data)")
    references = [example.all_references() for example in examples]
    scored: dict[str, ScoredModel] = {}
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show_progress,
    )
    method = decoding.describe() if labels is None else "label log-likelihood"
    with progress:
        for model_name, group in group_by_model(base_model, candidates).items():
            model_path = resolve_model(model_name)
            tokenizer = load_tokenizer(model_path)
            model = load_group(model_path, group)
            for candidate in group:
                bar = progress.add_task(f"{resolved}: {candidate.name}", total=len(examples))

                def advance(count: int, bar: TaskID = bar) -> None:
                    progress.advance(bar, count)

                render = partial(candidate_prompts, tokenizer, candidate, train_examples, labels)
                prompts = render(examples)
                started = time.perf_counter()
                threshold = None
                with activate(model, candidate):
                    if labels is not None and report_labels is not None:
                        if out_of_scope is not None:
                            threshold = _calibrate(
                                model, tokenizer, render(out_of_scope.calibration), out_of_scope, labels,
                                report_labels, batch_size,
                            )  # fmt: skip
                        predictions, statistics = _classify(
                            model, tokenizer, prompts, examples, labels, report_labels, names, batch_size,
                            advance, threshold, oos_label,
                        )  # fmt: skip
                    else:
                        predictions = generate_batched(
                            model,
                            tokenizer,
                            prompts,
                            max_new_tokens=max_new_tokens,
                            batch_size=batch_size,
                            decoding=decoding,
                            on_batch=advance,
                        )
                        chosen = text_metrics(resolved, names)
                        statistics = {n: m.statistics(predictions, references) for n, m in chosen.items()}
                scored[candidate.name] = ScoredModel(
                    name=candidate.name,
                    base_model=model_name,
                    adapter=str(candidate.adapter_dir) if candidate.adapter_dir else None,
                    shots=candidate.shots,
                    prompts=prompts,
                    predictions=predictions,
                    statistics=statistics,
                    seconds=time.perf_counter() - started,
                    decoding=method,
                    out_of_scope_threshold=threshold,
                )
            del model
    ordered = [scored[candidate.name] for candidate in candidates]
    info = data_info or DataInfo(path="<examples>", hash=dataset_hash(examples), examples=len(examples))
    settings = EvalSettings(
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        decoding=method,
        bootstrap_samples=samples,
    )
    report = build_report(resolved, ordered, info, settings, report_labels, oos_label)
    write_report(report, ordered, references, [example.source for example in examples], out)
    return report.to_json()


def label_set(
    examples: Sequence[Example], train_examples: Sequence[Example] | None, out_of_scope: str | None
) -> list[str]:
    """Sorted labels of the training data (the test data's when no training data is given).

    The out-of-scope label is scored only where the training data teaches it; the test data may hold it.
    """
    pool = train_examples or [example for example in examples if example.label != out_of_scope]
    if any(example.label is None for example in [*pool, *examples]):
        raise ConfigError("classification needs a label on every example (text/label rows)")
    labels = sorted({example.label for example in pool if example.label is not None})
    unseen = sorted({e.label for e in examples if e.label is not None} - set(labels) - {out_of_scope})
    if unseen:
        raise ConfigError(f"test labels never seen in the training data: {unseen[:10]}")
    return labels


def candidate_prompts(
    tokenizer: Any,
    candidate: Candidate,
    train_examples: list[Example] | None,
    labels: list[str] | None,
    examples: list[Example],
) -> list[str]:
    """The candidate's rendered prompt for each example: as is, or as its zero- or few-shot baseline."""
    if candidate.shots is None:
        return [render_text(tokenizer, e.prompt_messages(), generation_prompt=True) for e in examples]
    shots = select_shots(train_examples or [], candidate.shots) if candidate.shots else []
    instruction = classification_instruction(labels) if labels is not None else None
    return [
        render_text(tokenizer, baseline_messages(e, shots, instruction), generation_prompt=True)
        for e in examples
    ]


def _calibrate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    out_of_scope: OutOfScope,
    labels: list[str],
    report_labels: list[str],
    batch_size: int,
) -> float:
    """This model's out-of-scope threshold, on the calibration examples."""
    unknown = sorted({str(e.label) for e in out_of_scope.calibration} - set(report_labels))
    if unknown:
        raise ConfigError(f"calibration labels never seen in the training data: {unknown[:10]}")
    scores = score_best_labels(model, tokenizer, prompts, labels, batch_size=batch_size)
    gold = [report_labels.index(str(example.label)) for example in out_of_scope.calibration]
    return calibrate_out_of_scope(
        scores, gold, report_labels.index(out_of_scope.label), out_of_scope.objective
    )


def _classify(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    examples: list[Example],
    labels: list[str],
    report_labels: list[str],
    names: list[str],
    batch_size: int,
    advance: Callable[[int], None],
    threshold: float | None,
    out_of_scope: str | None,
) -> tuple[list[str], dict[str, Any]]:
    """Each example's predicted label (out of scope below `threshold`), and its statistics per metric."""
    scores = score_best_labels(model, tokenizer, prompts, labels, batch_size=batch_size, on_batch=advance)
    oos_index = report_labels.index(out_of_scope) if out_of_scope is not None else -1
    predicted = predict_labels(scores, threshold, oos_index)
    gold = [report_labels.index(example.label) for example in examples if example.label is not None]
    stats = classification_statistics(gold, predicted)
    return [report_labels[index] for index in predicted], {name: stats for name in names}


def group_by_model(base_model: str, candidates: list[Candidate]) -> dict[str, list[Candidate]]:
    """Candidates by the model they run on (the base, or a full fine-tune's folder), in order."""
    if len({candidate.name for candidate in candidates}) != len(candidates):
        raise ValueError(f"candidate names must be unique: {[c.name for c in candidates]}")
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.model or base_model, []).append(candidate)
    return groups


def load_group(model_path: str, group: list[Candidate]) -> Any:
    """The model at `model_path` in evaluation mode, with each candidate's adapter loaded by its name."""
    device = default_device()
    dtype = torch.bfloat16 if supports_fast_bf16(device) else torch.float32
    model: Any = load_model(model_path, dtype=dtype)
    model.to(device).eval()
    for candidate in group:
        if candidate.adapter_dir is None:
            continue
        if not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, str(candidate.adapter_dir), adapter_name=candidate.name)
        else:
            model.load_adapter(str(candidate.adapter_dir), adapter_name=candidate.name)
    # In bf16 each adapter's delta is added before rounding (the table in `tunesmith.lora`).
    use_lora_forwards(model, fused=False, fast_dropout=False)
    return model.eval()


def activate(model: Any, candidate: Candidate) -> AbstractContextManager[Any]:
    """The base with every adapter disabled, or the named adapter active."""
    if not isinstance(model, PeftModel):
        return nullcontext()
    if candidate.adapter_dir is None:
        return model.disable_adapter()
    model.set_adapter(candidate.name)
    return nullcontext()
