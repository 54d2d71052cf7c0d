"""The first half of a cycle: whether one starts (the trigger), the next dataset version, and the
candidate trained on it.

Owns: counting what arrived since the last cycle (feedback, monitoring alerts, time), the dataset the
candidate trains on (the champion's training rows and the corrections for sft, the preference pairs for
dpo, the rated answers for kto; each row whose prompt is close to a frozen test prompt dropped; then
`prepare_data`), and training it from the champion's adapter with the champion run's settings, resuming
a run a killed `loop run` left. Does not own: turning feedback into rows (`data.feedback`), preparing
(`data.prepare`), the trainers, or recording states (`run`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import DataFormat, PrepareSpec, TrainSpec, build_spec
from tunesmith.data import dedup
from tunesmith.data.feedback import feedback_rows
from tunesmith.data.ingest import load_split
from tunesmith.data.prepare import prepare_data
from tunesmith.loop.context import LoopContext
from tunesmith.monitor.check import prompt_text
from tunesmith.registry.loop_store import LoopCycle
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_store import ServingStore
from tunesmith.train.records import TrainResult
from tunesmith.train.rundir import atomic_write_text

# Alerts about an A/B split rather than the champion's answers: a canary's own `ab_worse` must not
# start the next cycle once the canary is rolled back.
EXPERIMENT_ALERTS = frozenset({"ab_worse", "sample_ratio_mismatch"})


def check_trigger(context: LoopContext, previous: LoopCycle | None, now: bool) -> dict[str, Any] | None:
    """Why a cycle starts now, with the feedback and alert ids it has seen (the next cycle counts from
    them); None when no trigger fired."""
    trigger = context.policy.trigger
    since = previous.lineage["triggered"] if previous is not None else {"feedback_id": 0, "alert_id": 0}
    _, feedback = ServingStore(context.registry).feedback_with_requests(deployment=context.deployment)
    alerts = MonitorStore(context.registry).list_alerts(context.deployment)
    new_feedback = [item["id"] for item in feedback if item["id"] > since["feedback_id"]]
    new_alerts = [a for a in alerts if a["id"] > since["alert_id"] and a["kind"] not in EXPERIMENT_ALERTS]
    reasons = ["started by hand (--now)"] if now else []
    if trigger.on_alert and new_alerts:
        kinds = sorted({alert["kind"] for alert in new_alerts})
        reasons.append(f"{len(new_alerts)} monitoring alerts since the last cycle ({', '.join(kinds)})")
    if trigger.min_feedback is not None and len(new_feedback) >= trigger.min_feedback:
        reasons.append(
            f"{len(new_feedback)} feedback items since the last cycle (policy: {trigger.min_feedback})"
        )
    if trigger.schedule is not None:
        elapsed = (
            None if previous is None else (datetime.now(UTC) - _aware(previous.created_at)).total_seconds()
        )
        if elapsed is None or elapsed >= trigger.schedule:
            reasons.append("scheduled (every " + f"{trigger.schedule:g}s)")
    if not reasons:
        return None
    return {
        "reasons": reasons,
        "feedback_id": max([since["feedback_id"], *new_feedback]),
        "alert_id": max([since["alert_id"], *(alert["id"] for alert in new_alerts)]),
        "new_feedback": len(new_feedback),
        "alerts": [alert["id"] for alert in new_alerts],
        "champion_run": context.champion_run["id"],
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def training_rows(context: LoopContext, feedback_id: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows the candidate trains on, less those near a frozen test prompt, and where they came from:
    feedback up to id `feedback_id`, the last the trigger saw (a resumed cycle builds the same rows)."""
    requests, feedback = ServingStore(context.registry).feedback_with_requests(deployment=context.deployment)
    feedback = [item for item in feedback if item["id"] <= feedback_id]
    made = feedback_rows(requests, feedback)
    if context.policy.train.objective == "dpo":
        rows: list[dict[str, Any]] = made.dpo
        sources = {"preference_pairs": len(rows)}
    elif context.policy.train.objective == "kto":
        rows = made.kto
        sources = {"rated_answers": len(rows), "good": sum(row["label"] for row in rows)}
    else:
        original = _original_rows(context) if context.policy.data.original else []
        rows = original + [{"messages": row["messages"], "source_ids": row["source_ids"]} for row in made.sft]
        sources = {"original": len(original), "corrections": len(made.sft)}
    test_prompts = [prompt_text({"messages": e.prompt_messages()}) for e in context.test_examples]
    rows, leaks = drop_test_leaks(rows, test_prompts, context.policy.data.leakage_threshold)
    linked = [row["source_ids"] for row in rows if "source_ids" in row]
    used = {"feedback_ids": sorted({ids["feedback_id"] for ids in linked}),
            "request_ids": sorted({ids["request_id"] for ids in linked})}  # fmt: skip
    return rows, {**sources, "dropped_near_test": leaks, **used}


def _original_rows(context: LoopContext) -> list[dict[str, Any]]:
    config = context.champion_run["config"]
    data_format = DataFormat(config["format"]) if config.get("format") else None
    examples, _ = load_split(Path(str(config["data"])), "train", data_format)
    return [{"messages": list(example.messages)} for example in examples]


def row_prompt(row: dict[str, Any]) -> str:
    """The user's words a training row (chat or preference pair) answers."""
    if "messages" in row:
        return prompt_text({"messages": row["messages"][:-1]})
    prompt = row["prompt"]
    return prompt_text({"prompt": prompt} if isinstance(prompt, str) else {"messages": prompt})


def drop_test_leaks(
    rows: list[dict[str, Any]], test_prompts: list[str], threshold: float
) -> tuple[list[dict[str, Any]], int]:
    """`rows` without those whose prompt equals or nearly repeats (Jaccard >= threshold) a test prompt.

    A row in a near-duplicate cluster (as `data prepare` clusters them) with a test prompt goes, even when
    it is close to the test prompt only through another row: erring towards dropping keeps the gate honest.
    """
    prompts = [row_prompt(row) for row in rows]
    signatures = dedup.MinHasher(0).signatures(prompts + test_prompts)
    exact = {dedup.exact_key(text) for text in test_prompts}
    leaked = np.asarray([dedup.exact_key(text) in exact for text in prompts], dtype=bool)
    for members in dedup.clusters(
        len(prompts) + len(test_prompts), dedup.candidate_pairs(signatures, threshold)
    ):
        if max(members) >= len(rows):  # the cluster holds a test prompt
            leaked[[index for index in members if index < len(rows)]] = True
    return [row for row, bad in zip(rows, leaked, strict=True) if not bad], int(leaked.sum())


def build_dataset(context: LoopContext, cycle: LoopCycle) -> dict[str, Any]:
    """Write and record the cycle's dataset (train and val splits; the frozen test set stays out)."""
    rows, sources = training_rows(context, cycle.lineage["triggered"]["feedback_id"])
    workdir = context.workdir(cycle.id)
    source = workdir / "dataset-rows.jsonl"
    source.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(source, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    data = context.policy.data
    # KTO validates on thumbs up and down alike: the trainer holds out a share of each, where a split
    # by `data prepare` (not stratified for rated answers) may leave one kind out of a small val split.
    val_share = 0.0 if context.policy.train.objective == "kto" else data.val_share
    spec = PrepareSpec(
        inputs=[source], out=workdir / "dataset", model=context.champion_run["base_model"], pii=data.pii,
        split=(1 - val_share, val_share, 0.0), near_dup_threshold=data.near_dup_threshold,
        leakage_threshold=data.leakage_threshold, calibrate=False, boilerplate_share=0.0,
    )  # fmt: skip
    result = prepare_data(spec, registry=context.registry)
    return {"path": str(result.out), "dataset": result.hash, "splits": result.splits,
            "frozen_test": context.test_hash, **sources}  # fmt: skip


def train_candidate(context: LoopContext, cycle: LoopCycle) -> dict[str, Any]:
    """Train the candidate from the champion's adapter on the cycle's dataset; a run a killed `loop run`
    left is resumed from its last checkpoint, a finished one is read back."""
    from tunesmith.train.dpo import train_dpo
    from tunesmith.train.kto import train_kto
    from tunesmith.train.sft import train_sft

    trainers = {"sft": train_sft, "dpo": train_dpo, "kto": train_kto}
    out = context.workdir(cycle.id) / "run"
    if (out / "run.json").is_file():
        result = TrainResult(**json.loads((out / "run.json").read_text(encoding="utf-8")))
    else:
        prepared = Path(cycle.lineage["dataset_built"]["path"])
        data = prepared / "train.jsonl" if context.policy.train.objective == "kto" else prepared  # see above
        section = {**context.train_settings, "data": str(data), "out": str(out),
                   "name": context.champion.name, "method": context.policy.train.objective, "model": context.champion_run["base_model"],
                   "init_adapter": context.champion.path}  # fmt: skip
        spec = build_spec(TrainSpec, section, {})
        resume = out if (out / "status.json").is_file() else None
        listener = context.registry.run_listener(context.champion.name)  # registers name@next on success
        result = trainers[spec.method](spec, listener=listener, resume=resume, progress=False)
    run = context.registry.get_run(result.run_id)
    assert run is not None and run["adapters"], f"run {result.run_id} registered no adapter"
    adapter = run["adapters"][-1]
    return {"run_id": result.run_id, "run_dir": result.run_dir, "adapter": f"{adapter['name']}@{adapter['version']}",
            "path": adapter["path"], "steps": result.steps, "train_loss": result.train_loss,
            "val_loss": result.val_loss, "dataset": result.data_hash, "init_adapter": context.champion.key}  # fmt: skip
