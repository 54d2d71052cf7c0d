"""Generation evaluation: several candidates on one held-out file, side by side.

Owns: loading the base model once and switching adapters on it (the base itself is scored with the
adapter disabled: no second copy in memory), scoring with the task metrics, and writing
`report.json`, `report.md` and `predictions.jsonl`. Does not own: the metrics' definitions or the
registry (the caller records the report).
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tunesmith.config import DataFormat
from tunesmith.data.ingest import load_examples
from tunesmith.data.records import dataset_hash
from tunesmith.data.render import render_prompt
from tunesmith.eval.generate import generate_batched
from tunesmith.eval.metrics import GENERATION_METRICS
from tunesmith.models.loading import (
    default_device,
    load_model,
    load_tokenizer,
    resolve_model,
    supports_fast_bf16,
)
from tunesmith.train.rundir import atomic_write_text


@dataclass(frozen=True)
class Candidate:
    """One model to score: the base (`adapter_dir` None) or a LoRA adapter on it."""

    name: str
    adapter_dir: Path | None = None


def evaluate_generation(
    base_model: str,
    candidates: list[Candidate],
    data: Path,
    out: Path,
    *,
    data_format: DataFormat | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    limit: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Generate greedily for every candidate on `data`, score, and write the report files to `out`.

    Returns the `report.json` payload: `models` (each with `name` and flat `metrics` of
    `{"value": ...}`), `data` (path, hash, count) and timing.
    """
    examples = load_examples(data, data_format)[:limit]
    model_path = resolve_model(base_model)
    tokenizer = load_tokenizer(model_path)
    device = default_device()
    dtype = torch.bfloat16 if supports_fast_bf16(device) else torch.float32
    model: Any = load_model(model_path, dtype=dtype)
    model.to(device).eval()
    for candidate in candidates:
        if candidate.adapter_dir is not None:
            if not isinstance(model, PeftModel):
                model = PeftModel.from_pretrained(  # type: ignore[arg-type]
                    model, str(candidate.adapter_dir), adapter_name=candidate.name
                )
            else:
                model.load_adapter(str(candidate.adapter_dir), adapter_name=candidate.name)
    prompts = [render_prompt(tokenizer, example) for example in examples]
    references = [example.reference() for example in examples]

    models_report: list[dict[str, Any]] = []
    predictions_lines: list[str] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show_progress,
    )
    with progress:
        for candidate in candidates:
            task = progress.add_task(f"generating: {candidate.name}", total=len(prompts))

            def advance(count: int, task: TaskID = task) -> None:
                progress.advance(task, count)

            started = time.perf_counter()
            with _activate(model, candidate):
                predictions = generate_batched(
                    model,
                    tokenizer,
                    prompts,
                    max_new_tokens=max_new_tokens,
                    batch_size=batch_size,
                    on_batch=advance,
                )
            seconds = time.perf_counter() - started
            metrics = {
                name: {"value": fn(predictions, references)} for name, fn in GENERATION_METRICS.items()
            }
            models_report.append(
                {
                    "name": candidate.name,
                    "base_model": base_model,
                    "adapter": str(candidate.adapter_dir) if candidate.adapter_dir else None,
                    "metrics": metrics,
                    "examples_per_second": round(len(prompts) / seconds, 3),
                }
            )
            for index, (example, prompt, prediction) in enumerate(
                zip(examples, prompts, predictions, strict=True)
            ):
                line = {
                    "index": index,
                    "source": example.source,
                    "model": candidate.name,
                    "prompt": prompt,
                    "prediction": prediction,
                    "reference": example.reference(),
                }
                predictions_lines.append(json.dumps(line, ensure_ascii=False))

    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"path": str(data), "hash": dataset_hash(examples), "examples": len(examples)},
        "settings": {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "decoding": "greedy"},
        "models": models_report,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.jsonl", "\n".join(predictions_lines) + "\n")
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


def _activate(model: Any, candidate: Candidate) -> AbstractContextManager[Any]:
    """The base with every adapter disabled, or the named adapter active."""
    if not isinstance(model, PeftModel):
        return nullcontext()
    if candidate.adapter_dir is None:
        return model.disable_adapter()
    model.set_adapter(candidate.name)
    return nullcontext()


def render_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table: one row per model, one column per metric."""
    names = list(report["models"][0]["metrics"]) if report["models"] else []
    lines = [
        "# Evaluation report",
        "",
        f"Data: `{report['data']['path']}` ({report['data']['examples']} examples, sha256 "
        f"`{report['data']['hash'][:12]}`), greedy decoding.",
        "",
        "| model | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for entry in report["models"]:
        values = " | ".join(f"{entry['metrics'][name]['value']:.4f}" for name in names)
        lines.append(f"| {entry['name']} | {values} |")
    return "\n".join(lines) + "\n"


def combine_reports(sources: list[Path], out: Path) -> dict[str, Any]:
    """One report from evaluations of the same data written to `sources` (e.g. a baseline scored first)."""
    reports = [json.loads((source / "report.json").read_text(encoding="utf-8")) for source in sources]
    if len({report["data"]["hash"] for report in reports}) != 1:
        raise ValueError("cannot combine evaluations of different data")
    combined = {**reports[-1], "models": [entry for report in reports for entry in report["models"]]}
    predictions = "".join((source / "predictions.jsonl").read_text(encoding="utf-8") for source in sources)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.jsonl", predictions)
    atomic_write_text(out / "report.json", json.dumps(combined, indent=2) + "\n")
    atomic_write_text(out / "report.md", render_markdown(combined))
    return combined
