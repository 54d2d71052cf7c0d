"""The second half of a cycle: the gate against the champion, the canary, and promoting or rolling back.

Owns: scoring champion and candidate on the frozen test set (`eval.evaluate_models`, paired intervals),
answering a fresh sample of production prompts for the judge (`eval.judge`) and the candidate's bias
audit (`audit.bias`, recorded as an evaluation of its version), setting the canary's
weights, reading its A/B report (`monitor.ab`), and the deployment change that ends it. Each deployment
change is skipped when the deployment already has those weights, so a `loop run` killed between the
change and the cycle's next state does not start the A/B test over. Does not own: the verdicts
(`decide`), the statistics, or recording states (`run`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunesmith.data.records import Example, Message
from tunesmith.eval.records import DataInfo
from tunesmith.loop.build import row_prompt
from tunesmith.loop.context import ADMIN, LoopContext
from tunesmith.loop.decide import (
    CANDIDATE,
    CHAMPION,
    CanaryVerdict,
    GateCheck,
    bias_check,
    canary_verdict,
    judge_check,
    metric_checks,
)
from tunesmith.monitor.ab import load_ab_report
from tunesmith.monitor.check import prompt_text
from tunesmith.registry.loop_store import LoopCycle
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_records import VariantWeight
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry


def _candidates(context: LoopContext, cycle: LoopCycle) -> list[Any]:
    from tunesmith.eval.evaluate import Candidate

    trained = Path(cycle.lineage["candidate_trained"]["path"])
    return [
        Candidate(CHAMPION, adapter_dir=Path(context.champion.path)),
        Candidate(CANDIDATE, adapter_dir=trained),
    ]


def gate_candidate(context: LoopContext, cycle: LoopCycle) -> tuple[list[GateCheck], dict[str, Any]]:
    """The gate's checks (frozen test set, then the judge on production prompts) and what they read."""
    from tunesmith.eval.evaluate import evaluate_models

    gate, out = context.policy.gate, context.workdir(cycle.id) / "gate"
    info = DataInfo(
        path=str(context.frozen_test), hash=context.test_hash, examples=len(context.test_examples)
    )
    report = evaluate_models(
        context.champion_run["base_model"], _candidates(context, cycle), context.test_examples, out / "frozen",
        data_info=info, task=context.task, metrics=context.metrics, max_new_tokens=gate.max_new_tokens,
        samples=gate.bootstrap_samples, show_progress=False,
    )  # fmt: skip
    run_id = cycle.lineage["candidate_trained"]["run_id"]
    evaluation = context.registry.record_evaluation(run_id, report, out / "frozen")
    checks = metric_checks(report, gate.metric, gate.min_delta, gate.tolerance, gate.tolerances)
    data: dict[str, Any] = {"frozen_test": {"path": str(context.frozen_test), "hash": context.test_hash,
                            "examples": len(context.test_examples)}, "evaluation_id": evaluation,
                            "report": str(out / "frozen" / "report.json")}  # fmt: skip
    if gate.production_sample:
        check, data["production"] = _judge_production(context, cycle, out / "production")
        checks.append(check)
    if gate.bias is not None:
        check, data["bias"] = _audit_bias(context, cycle, out / "bias")
        checks.append(check)
    return checks, data


def production_examples(context: LoopContext, cycle: LoopCycle, count: int) -> list[Example]:
    """The latest `count` distinct production prompts the candidate did not train on, each with the
    answer production gave as its reference (what the judge sees)."""
    rows = (context.workdir(cycle.id) / "dataset-rows.jsonl").read_text(encoding="utf-8").splitlines()
    trained_on = set(cycle.lineage["dataset_built"]["request_ids"])
    seen = {row_prompt(json.loads(line)) for line in rows}  # nor the same words asked again
    examples: list[Example] = []
    for request in reversed(MonitorStore(context.registry).deployment_traffic(context.deployment)):
        if not request["prompt"] or not request["outputs"]:  # logged without text: the request log is `off`
            continue
        text = prompt_text(request["prompt"])
        if request["id"] in trained_on or text in seen:
            continue
        seen.add(text)
        reply: Message = {"role": "assistant", "content": request["outputs"][0]}
        examples.append(
            Example(messages=[*_messages(request["prompt"]), reply], source=f"request {request['id']}")
        )
        if len(examples) == count:
            break
    return examples


def _messages(prompt: dict[str, Any]) -> list[Message]:
    if "prompt" in prompt:
        return [{"role": "user", "content": str(prompt["prompt"])}]
    return [
        {"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
         else " ".join(part["text"] for part in m["content"])}
        for m in prompt["messages"]
    ]  # fmt: skip


def _judge_production(context: LoopContext, cycle: LoopCycle, out: Path) -> tuple[GateCheck, dict[str, Any]]:
    from tunesmith.config import EvalTask
    from tunesmith.eval.evaluate import evaluate_models
    from tunesmith.eval.judge import make_judge, pairwise_preferences
    from tunesmith.eval.report import read_scored

    gate = context.policy.gate
    examples = production_examples(context, cycle, gate.production_sample)
    if not examples:
        return GateCheck("judge", False, "judge: no production prompts the candidate did not train on"), {}
    evaluate_models(
        context.champion_run["base_model"], _candidates(context, cycle), examples, out, task=EvalTask.generation,
        metrics=["rouge_l"], max_new_tokens=gate.max_new_tokens, samples=gate.bootstrap_samples, show_progress=False,
    )  # fmt: skip
    _, scored, references, _ = read_scored(out)
    assert gate.judge is not None
    judge = make_judge(gate.judge.model, gate.judge.base_url, gate.judge.api_key_env)
    questions = [prompt_text({"messages": example.prompt_messages()}) for example in examples]
    champion, candidate = (model.predictions for model in scored)
    outcomes = pairwise_preferences(judge, questions, candidate, champion, [group[0] for group in references])
    check = judge_check(outcomes, gate.min_win_rate, gate.bootstrap_samples)
    return check, {"prompts": [example.source for example in examples], "outcomes": outcomes, "out": str(out)}


def _audit_bias(context: LoopContext, cycle: LoopCycle, out: Path) -> tuple[GateCheck, dict[str, Any]]:
    """The bias audit of the candidate (named by its adapter version, so `deploy promote
    --require-bias-audit` finds it), with the champion or the base answering beside it; recorded."""
    from tunesmith.audit.bias import BASE_NAME, AuditTarget, audit_bias
    from tunesmith.audit.bias_findings import AuditSettings
    from tunesmith.eval.evaluate import Candidate

    bias, trained = context.policy.gate.bias, cycle.lineage["candidate_trained"]
    assert bias is not None
    champion, candidate = _candidates(context, cycle)
    reference = {"champion": champion, "base": Candidate(BASE_NAME), "none": None}[bias.baseline]
    target = AuditTarget(trained["adapter"], context.champion_run["base_model"], candidate, trained["run_id"])
    settings = AuditSettings(
        threshold=bias.threshold, gate_measures=tuple(bias.gate_measures), max_new_tokens=bias.max_new_tokens,
        samples=context.policy.gate.bootstrap_samples,
    )  # fmt: skip
    report = audit_bias(
        target, bias.data, out, context.bias_attributes, settings, data_format=bias.format, reference=reference,
        limit=bias.limit, show_progress=False,
    )  # fmt: skip
    evaluation = context.registry.record_evaluation(trained["run_id"], report, out)
    data = {"evaluation_id": evaluation, "report": str(out / "bias_report.json"), "gate": report["gate"]}
    return bias_check(report), data


def _set_weights(
    registry: Registry, deployment: str, variants: list[VariantWeight], action: str, actor: str | None
) -> bool:
    """Set the deployment's variants unless they are already these; whether they changed."""
    store = ServingStore(registry)
    found = store.find_deployment(ADMIN, deployment)
    assert found is not None
    if [(v["model"], float(v["weight"])) for v in found["variants"]] == [
        (v["model"], v["weight"]) for v in variants
    ]:
        return False
    store.set_weights(deployment, variants, action=action, actor=actor)
    return True


def start_canary(context: LoopContext, cycle: LoopCycle, actor: str | None) -> dict[str, Any]:
    """Send the policy's share of traffic to the candidate, the rest to the champion."""
    assert cycle.candidate is not None
    weight = context.policy.canary.weight
    variants: list[VariantWeight] = [{"model": cycle.champion, "weight": 100.0 - weight},
                                     {"model": cycle.candidate, "weight": weight}]  # fmt: skip
    _set_weights(context.registry, context.deployment, variants, "canary", actor)
    return {"variants": variants, "metric": context.policy.canary.metric}


def changed_by_hand(context: LoopContext, cycle: LoopCycle) -> list[VariantWeight] | None:
    """The deployment's variants when someone changed them during the canary (None: as the canary set)."""
    found = ServingStore(context.registry).find_deployment(ADMIN, context.deployment)
    assert found is not None
    current = [{"model": v["model"], "weight": float(v["weight"])} for v in found["variants"]]
    return None if current == cycle.lineage["canary"]["variants"] else found["variants"]


def watch_canary(context: LoopContext, cycle: LoopCycle) -> CanaryVerdict:
    """The canary's verdict from the A/B report over the traffic since it started."""
    assert cycle.candidate is not None
    report = load_ab_report(context.registry, context.deployment, control=cycle.champion)
    canary = context.policy.canary
    return canary_verdict(report, cycle.candidate, canary.metric, canary.max_requests, canary.undecided)


def end_canary(registry: Registry, cycle: LoopCycle, promote: bool, actor: str | None) -> dict[str, Any]:
    """All traffic to the candidate (promote) or back to the champion (roll back)."""
    model = cycle.candidate if promote else cycle.champion
    assert model is not None
    variants: list[VariantWeight] = [{"model": model, "weight": 100.0}]
    changed = _set_weights(registry, cycle.deployment, variants, "promote" if promote else "rollback", actor)
    return {"variants": variants, "changed": changed}
