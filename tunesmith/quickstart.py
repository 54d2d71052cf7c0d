"""The quickstart: baseline → fine-tune → evaluate on the demo dataset that ships in the package.

Owns: the demo's settings and the order of its steps. Composes the library (train, eval, registry);
the CLI only prints what this returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import DEFAULT_MODEL, LoraSpec, TrainSpec, default_database_url, tunesmith_home
from tunesmith.eval.evaluate import Candidate, evaluate_generation
from tunesmith.eval.report import combine_reports
from tunesmith.registry.store import Registry
from tunesmith.train.records import TrainResult
from tunesmith.train.sft import train_sft

DEMO_DIR = Path(__file__).parent / "data" / "demo"
ADAPTER_NAME = "bramble-voice"


def demo_spec(out: Path | None = None, model: str = DEFAULT_MODEL) -> TrainSpec:
    """Settings tuned to finish in minutes on a 2-core laptop CPU and still learn the voice.

    LoRA dropout is off: on a CPU its random masks cost about a quarter of the step time, and one
    epoch over 200 examples does not overfit. Rows of 128 tokens hold one demo example each, which
    keeps attention cheap on a CPU.
    """
    return TrainSpec(
        model=model,
        lora=LoraSpec(dropout=0.0),
        pack_len=128,
        data=DEMO_DIR / "train.jsonl",
        val_data=DEMO_DIR / "val.jsonl",
        epochs=1,
        batch_size=4,
        lr=1e-3,
        warmup_ratio=0.1,
        eval_every=10,
        save_every=10,
        name=ADAPTER_NAME,
        out=out,
    )


@dataclass
class QuickstartResult:
    train: TrainResult
    report: dict[str, Any]
    eval_dir: Path


def run_quickstart(
    out: Path | None = None,
    *,
    model: str = DEFAULT_MODEL,
    show_progress: bool = True,
    on_baseline: Callable[[dict[str, Any]], None] | None = None,
) -> QuickstartResult:
    """Score the base model, fine-tune it, score the adapter; everything recorded in the registry."""
    spec = demo_spec(out, model)
    registry = Registry(default_database_url()).connect()
    test = DEMO_DIR / "test.jsonl"
    baseline_dir = tunesmith_home() / "quickstart" / "baseline"
    baseline = evaluate_generation(
        spec.model,
        [Candidate("base")],
        test,
        baseline_dir,
        max_new_tokens=64,
        batch_size=20,
        show_progress=show_progress,
    )
    if on_baseline is not None:
        on_baseline(baseline)
    result = train_sft(spec, listener=registry.run_listener(ADAPTER_NAME), progress=show_progress)
    run_dir = Path(result.run_dir)
    assert result.artifact_dir is not None
    tuned_dir = run_dir / "eval" / "fine-tuned"
    evaluate_generation(
        spec.model,
        [Candidate("fine-tuned", Path(result.artifact_dir))],
        test,
        tuned_dir,
        max_new_tokens=64,
        batch_size=20,
        show_progress=show_progress,
    )
    eval_dir = run_dir / "eval"
    report = combine_reports([baseline_dir, tuned_dir], eval_dir)
    registry.record_evaluation(result.run_id, report, eval_dir)
    return QuickstartResult(train=result, report=report, eval_dir=eval_dir)
