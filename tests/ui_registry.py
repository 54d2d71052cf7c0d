"""A registry filled through the store APIs for the console's tests and benchmark (no training).

Two tenants (acme, globex) with keys, runs with metric curves on disk, a prepared dataset, an evaluation
whose predictions include markup, and a deployment with two variants and some traffic and feedback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry

XSS = "<script>window.__xss = 1</script><b>bold</b>"
DATASET_ID = "d" * 64


@dataclass
class Filled:
    registry: Registry
    store: ServingStore
    keys: dict[str, str]  # admin, acme, globex
    runs: dict[str, list[str]] = field(default_factory=dict)  # tenant -> run ids
    evaluation_id: int = 0
    globex_evaluation_id: int = 0
    deployment: str = "acme-voice"


def write_run(
    registry: Registry, root: Path, run_id: str, *, steps: int = 40, lr: float = 2e-4, adapter: str | None = None,
    model: str = "tiny-llama", metrics: int = 0,
) -> str:  # fmt: skip
    """A succeeded LoRA run recorded through `Registry.record_event`, with metrics.jsonl and plan.json."""
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    lines = []
    for step in range(1, steps + 1):
        lines.append({"step": step, "epoch": step / steps, "train_loss": round(3.0 * math.exp(-step * lr * 100) + 0.5, 6),
                      "lr": lr * (1 - step / (steps + 1)), "tokens_per_second": 1000.0, "trained_tokens": step * 512})  # fmt: skip
        if step % 10 == 0:
            lines.append({"step": step, "epoch": step / steps, "val_loss": round(2.5 * math.exp(-step * lr * 80) + 0.7, 6),
                          "val_exact_match": round(step / (steps * 2), 4)})  # fmt: skip
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8"
    )
    (run_dir / "plan.json").write_text(
        json.dumps({"version": 2, "pass_tokens": 2048, "fits": True}), encoding="utf-8"
    )
    config = {"model": model, "data": "data/train", "tuning": "lora", "lr": lr, "lora": {"r": 8, "alpha": 16}}
    registry.record_event(run_id, "created", f"run {run_id} created", {"config": config, "run_dir": str(run_dir)},
                          "2026-12-01T10:00:00.000+00:00")  # fmt: skip
    final = {"train_loss": [x for x in lines if "train_loss" in x][-1]["train_loss"],
             "val_loss": ([x["val_loss"] for x in lines if "val_loss" in x] or [None])[-1], "tokens_per_second": 1000.0,
             "steps": steps, "device": "cpu", "precision": "fp32", "peak_memory_gb": 0.1}  # fmt: skip
    registry.record_event(
        run_id, "succeeded", "done",
        {**final, "trained_tokens": steps * 512, "wall_seconds": 12.5, "data_hash": DATASET_ID, "num_examples": 100,
         "artifact_dir": str(run_dir / "adapter")},
        "2026-12-01T10:05:00.000+00:00", adapter_name=adapter,
    )  # fmt: skip
    if metrics:  # extra metrics, as a registry with many tracked scores has
        with registry.session() as session, session.begin():
            from tunesmith.registry.models import RunRecord

            record = session.get(RunRecord, run_id)
            assert record is not None
            record.metrics = {
                **record.metrics,
                **{f"metric_{i:02d}": (i * 0.37 + len(run_id)) % 1 for i in range(metrics)},
            }
    return run_id


def write_evaluation(
    registry: Registry,
    root: Path,
    run_id: str,
    examples: int = 30,
    name: str = "eval",
    per_class: bool = False,
) -> int:
    """A QA evaluation of base vs the run's adapter with `examples` examples; example 0's output is XSS."""
    out = root / name
    out.mkdir(parents=True)
    models = ["base", "acme-adapter"]
    lines = []
    for index in range(examples):
        for model in models:
            correct = (index % 3 != 0) if model == "acme-adapter" else (index % 2 == 0)
            prediction = XSS if index == 0 and model == "acme-adapter" else f"answer {index} by {model}"
            lines.append({"index": index, "source": f"test.jsonl:{index + 1}", "model": model,
                          "prompt": f"question {index}?", "prediction": prediction, "reference": f"answer {index}",
                          "references": [f"answer {index}"],
                          "statistics": {"exact_match": [float(correct)], "token_f1": [float(correct) * 0.9]}})  # fmt: skip
    (out / "predictions.jsonl").write_text(
        "\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8"
    )

    def interval(value: float) -> dict[str, float]:
        return {"value": value, "ci_low": value - 0.1, "ci_high": value + 0.1}

    report: dict[str, Any] = {
        "created_at": "2026-12-01T11:00:00+00:00", "task": "qa",
        "data": {"path": "data/test.jsonl", "hash": DATASET_ID, "examples": examples},
        "settings": {"max_new_tokens": 32, "batch_size": 8, "decoding": "greedy", "bootstrap_samples": 1000},
        "models": [
            {"name": "base", "base_model": "tiny-llama", "adapter": None, "shots": 0,
             "metrics": {"exact_match": interval(0.5), "token_f1": interval(0.45)}, "examples_per_second": 10.0},
            {"name": "acme-adapter", "base_model": "tiny-llama", "adapter": "acme@1", "shots": None,
             "metrics": {"exact_match": interval(0.66), "token_f1": interval(0.6)}, "examples_per_second": 9.0},
        ],
        "comparisons": [{"model": "acme-adapter", "reference": "base", "metric": "exact_match", "difference": 0.16,
                         "ci_low": 0.02, "ci_high": 0.3, "p_value": 0.01, "verdict": "better"}],
    }  # fmt: skip
    if per_class:  # as a classification report has them (the page shows a table per model)
        report["models"][1]["per_class"] = {
            "<refund>": {"precision": 0.9, "recall": 0.8, "f1": 0.85, "support": 3}
        }
    return registry.record_evaluation(run_id, report, out)


def fill(root: Path, url: str | None = None) -> Filled:
    """The console's test registry under `root` (SQLite there unless `url`)."""
    registry = Registry(url or f"sqlite:///{root / 'registry.db'}").connect()
    store = ServingStore(registry)
    keys = {"admin": store.create_key(None, admin=True), "acme": store.create_key("acme", admin=False),
            "globex": store.create_key("globex", admin=False)}  # fmt: skip
    filled = Filled(registry, store, keys)
    registry.record_dataset(DATASET_ID, str(root / "data" / "train"), 100, {
        "inputs": [{"path": "raw.csv", "sha256": "e" * 64, "rows": 120}], "model": "tiny-llama", "seed": 0,
        "split": [0.8, 0.1, 0.1],
        "steps": [{"name": "clean", "params": {}, "rows_in": 120, "rows_out": 110, "changed": {"whitespace": 4}},
                  {"name": "dedup", "params": {}, "rows_in": 110, "rows_out": 100, "changed": {}}],
    })  # fmt: skip
    runs_root = root / "runs"
    for tenant, count in (("acme", 3), ("globex", 1)):
        filled.runs[tenant] = []
        for index in range(count):
            run_id = f"run-{tenant}-{index}"
            write_run(registry, runs_root, run_id, lr=2e-4 * (index + 1), adapter=f"{tenant}-adapter")
            store.register_adapter(f"{tenant}-adapter", runs_root / run_id / "adapter", "tiny-llama", tenant=tenant,
                                   run_id=run_id)  # fmt: skip
            filled.runs[tenant].append(run_id)
    filled.evaluation_id = write_evaluation(registry, root, filled.runs["acme"][-1])
    filled.globex_evaluation_id = write_evaluation(
        registry, root, filled.runs["globex"][0], examples=5, name="eval-g", per_class=True
    )
    store.create_deployment(filled.deployment, [{"model": "acme-adapter@1", "weight": 90},
                                                {"model": "acme-adapter@2", "weight": 10}], tenant="acme")  # fmt: skip
    start = datetime(2026, 12, 1, 9, tzinfo=UTC)
    for index in range(20):
        variant = "acme-adapter@1" if index % 4 else "acme-adapter@2"
        store.log_request(prompt={"prompt": "hi"}, outputs=["hello"], id=f"resp-{index}", tenant="acme",
                          endpoint="completions", requested_model=filled.deployment, deployment=filled.deployment,
                          variant=variant, user=f"u{index}", finish_reasons=["stop"], prompt_tokens=2,
                          completion_tokens=1, latency_ms=5.0,
                          created_at=start + timedelta(hours=2.5 * index))  # fmt: skip
    acme = store.authenticate(keys["acme"])
    assert acme is not None
    for index in range(0, 20, 2):
        store.record_feedback(acme, f"resp-{index}", rating=5 if index % 4 else 2, thumbs=None, comment=None,
                              correction=None, preferred_over=None, ranking=None)  # fmt: skip
    return filled


@dataclass
class Reviews:
    store: Any  # a ReviewStore
    admin: Any  # the admin Caller
    keys: dict[str, str]  # alice, bob (reviewers of acme), vic (a viewer of acme)
    pairwise: int
    rubric: int


def fill_reviews(filled: Filled) -> Reviews:
    """Two reviewers and a viewer of tenant acme, a blind pairwise task of 10 items (acme-adapter@1 against
    base, each output starting with its model's name) and a rubric task of 5 items, 2 reviewers each."""
    from tunesmith.registry.serving_records import Caller, Role
    from tunesmith.review.records import NewItem, ReviewKind
    from tunesmith.review.rubric import RubricSpec
    from tunesmith.review.store import ReviewStore

    store = ReviewStore(filled.registry)
    keys = {name: filled.store.create_key("acme", admin=False, role=role, name=name)
            for name, role in (("alice", Role.reviewer), ("bob", Role.reviewer), ("vic", Role.viewer))}  # fmt: skip
    admin = Caller(tenant=None, is_admin=True)
    models = ("acme-adapter@1", "base")
    pairs = [NewItem([{"role": "user", "content": f"write tagline {i}"}], f"reference {i}",
                     [{"model": m, "text": f"{m} says: tagline {i}"} for m in models], {"example": i})
             for i in range(10)]  # fmt: skip
    pairwise = store.create(admin, "taglines: adapter vs base", ReviewKind.pairwise, pairs, source={"test": True},
                            tenant="acme")  # fmt: skip
    singles = [NewItem([{"role": "user", "content": f"rate answer {i}"}], None,
                       [{"model": models[i % 2], "text": f"answer {i} <script>window.__xss = 1</script>"}], {"example": i})
               for i in range(5)]  # fmt: skip
    rubric = RubricSpec(criteria={"voice": "Does it sound like acme?", "accuracy": "Is it correct?"})
    scored = store.create(admin, "voice check", ReviewKind.rubric, singles, source={"test": True}, rubric=rubric,
                          tenant="acme")  # fmt: skip
    return Reviews(store, admin, keys, pairwise.id, scored.id)
