"""The seven stages: for each, what it depends on (its inputs), how it runs, and whether its outputs exist.

Owns: per stage, the flat inputs its cache key hashes (the configuration keys that change its result,
the content hashes of the files it reads, and the identity of what earlier stages made), the one
library call it makes (`prepare_data`, `evaluate_generation`, `train_sft`, `check_gate` with its
verdict recorded in the registry, the serving store's register and deploy), where its outputs go, and
how to tell that they are gone. Does not own: the order, the cache or deciding what is stale
(`pipeline`, `cache`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.config import EvalSpec
from tunesmith.project.cache import StageRecord, flatten
from tunesmith.project.gate import FINE_TUNED, GateFailed, check_gate, gate_verdict
from tunesmith.project.spec import Project, Stage
from tunesmith.registry.serving_store import Caller, NotFoundError, ServingStore
from tunesmith.registry.store import Registry

if TYPE_CHECKING:
    from tunesmith.eval.generate import Decoding

Upstream = Mapping[Stage, StageRecord]  # the records of the stages this one reads
_ADMIN = Caller(tenant=None, is_admin=True)


@dataclass(frozen=True)
class StageContext:
    key: str  # the stage's cache key: its output folders are named by it
    registry: Registry
    show_progress: bool


@dataclass(frozen=True)
class StageOutput:
    outputs: dict[str, Any]
    identity: str  # what later stages' keys hash
    summary: str  # one line for the console


@dataclass(frozen=True)
class StageSteps:
    inputs: Callable[[Project, Upstream], dict[str, Any]]
    run: Callable[[Project, Upstream, StageContext], StageOutput]
    missing: Callable[[Project, dict[str, Any], Registry], str | None]  # why the outputs are gone, or None


def _relative(project: Project, path: Path) -> str:
    return str(path.relative_to(project.root))


def _upstream(upstream: Upstream, *stages: Stage) -> dict[str, Any]:
    return {f"upstream.{stage}": upstream[stage].identity for stage in stages}


# ---------------------------------------------------------------------------------------------- prepare


def _prepare_inputs(project: Project, upstream: Upstream) -> dict[str, Any]:
    from tunesmith.data.output import input_sha256

    config = project.prepare_spec().model_dump(mode="json", exclude={"inputs", "out", "model", "format"})
    files = {f"file.{path}": input_sha256(project.root / path) for path in project.spec.data.files}
    return {"model": project.spec.model, "data.format": project.spec.data.format, **flatten(config, "prepare."),
            **files}  # fmt: skip


def _prepare(project: Project, upstream: Upstream, context: StageContext) -> StageOutput:
    from tunesmith.data.prepare import prepare_data

    result = prepare_data(project.prepare_spec(), registry=context.registry)
    splits = ", ".join(f"{name} {count}" for name, count in result.splits.items())
    outputs = {"path": _relative(project, result.out), "dataset": result.hash, "splits": result.splits}
    return StageOutput(outputs, result.hash, f"dataset {result.hash[:12]} ({splits})")


def _prepare_missing(project: Project, outputs: dict[str, Any], registry: Registry) -> str | None:
    manifest = project.root / outputs["path"] / "dataset.json"
    if (
        not manifest.is_file()
        or json.loads(manifest.read_text(encoding="utf-8"))["hash"] != outputs["dataset"]
    ):
        return f"the prepared dataset {outputs['path']} is gone or was replaced"
    return None


# ---------------------------------------------------------------------------------------------- baseline


def _scoring_inputs(project: Project) -> dict[str, Any]:
    """The eval keys that change what a model answers or how it is scored: both baseline and eval read them."""
    from tunesmith.data.output import input_sha256

    config = project.eval_spec()
    calibration = config.calibration_data
    files = {f"file.{_relative(project, calibration)}": input_sha256(calibration)} if calibration else {}
    return {"eval.task": project.task.value, "eval.metrics": config.metrics, "eval.max_new_tokens":
            config.max_new_tokens, "eval.decoding": _decoding(config).describe(), "eval.batch_size":
            config.batch_size, "eval.limit": config.limit, "eval.out_of_scope_label": config.out_of_scope_label,
            **files}  # fmt: skip


def _decoding(spec: EvalSpec) -> Decoding:
    from tunesmith.eval.generate import Decoding

    return Decoding(
        num_beams=spec.num_beams, length_penalty=spec.length_penalty, no_repeat_ngram_size=spec.no_repeat_ngram_size,
        repetition_penalty=spec.repetition_penalty, do_sample=spec.do_sample, temperature=spec.temperature,
        top_p=spec.top_p, seed=spec.seed,
    )  # fmt: skip


def _baseline_inputs(project: Project, upstream: Upstream) -> dict[str, Any]:
    return {"model": project.spec.model, **_upstream(upstream, Stage.prepare), **_scoring_inputs(project),
            "eval.shots": project.eval_spec().shots}  # fmt: skip


def _baseline(project: Project, upstream: Upstream, context: StageContext) -> StageOutput:
    from tunesmith.eval.evaluate import baseline_candidates

    out = project.state_dir / "baseline" / context.key[:12]
    candidates = baseline_candidates(project.eval_spec().shots)
    report = _evaluate(project, candidates, out, context.show_progress)
    context.registry.record_evaluation(None, report, out)
    return StageOutput(
        {"path": _relative(project, out), "metrics": _values(report)},
        _predictions_hash(out),
        _headline(report),
    )


def _evaluate(project: Project, candidates: list[Any], out: Path, show_progress: bool) -> dict[str, Any]:
    from tunesmith.eval.evaluate import evaluate_generation

    config = project.eval_spec()
    return evaluate_generation(
        project.spec.model, candidates, project.prepared_dir, out, train_data=project.prepared_dir,
        task=project.task, metrics=config.metrics, max_new_tokens=config.max_new_tokens,
        decoding=_decoding(config), out_of_scope_label=config.out_of_scope_label,
        calibration_data=config.calibration_data, out_of_scope_objective=config.out_of_scope_objective,
        batch_size=config.batch_size, limit=config.limit,
        samples=config.bootstrap_samples, show_progress=show_progress,
    )  # fmt: skip


def _predictions_hash(out: Path) -> str:
    from tunesmith.data.output import file_sha256

    return file_sha256(out / "predictions.jsonl")  # greedy or seeded decoding: the same answers hash the same


def _values(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    return {m["name"]: {k: v["value"] for k, v in m["metrics"].items()} for m in report["models"]}


def _headline(report: dict[str, Any]) -> str:
    first = next(iter(report["models"][0]["metrics"]))
    scores = ", ".join(f"{m['name']} {m['metrics'][first]['value']:.3f}" for m in report["models"])
    return f"{first} on {report['data']['examples']} test examples: {scores}"


def _report_missing(project: Project, outputs: dict[str, Any], registry: Registry) -> str | None:
    report = project.root / outputs["path"] / "report.json"
    return None if report.is_file() else f"{_relative(project, report)} is gone"


# ---------------------------------------------------------------------------------------------- train


def _train_inputs(project: Project, upstream: Upstream) -> dict[str, Any]:
    config = project.train_spec().model_dump(
        mode="json", exclude={"data", "val_data", "model", "out", "name"}
    )
    return {"model": project.spec.model, **_upstream(upstream, Stage.prepare), **flatten(config, "train.")}


def _train(project: Project, upstream: Upstream, context: StageContext) -> StageOutput:
    from tunesmith.train.sft import train_sft

    result = train_sft(
        project.train_spec(), listener=context.registry.run_listener(), progress=context.show_progress
    )
    outputs = {"run_id": result.run_id, "run_dir": result.run_dir, "adapter": result.artifact_dir,
               "steps": result.steps, "train_loss": result.train_loss, "val_loss": result.val_loss}  # fmt: skip
    val = f", val loss {result.val_loss:.4f}" if result.val_loss is not None else ""
    summary = f"{result.run_id}: {result.steps} steps in {result.wall_seconds:.0f}s, train loss {result.train_loss:.4f}{val}"
    return StageOutput(outputs, result.run_id, summary)


def _train_missing(project: Project, outputs: dict[str, Any], registry: Registry) -> str | None:
    adapter = Path(outputs["adapter"])
    return None if (adapter / "adapter_config.json").is_file() else f"the adapter {adapter} is gone"


# ---------------------------------------------------------------------------------------------- eval


def _eval_inputs(project: Project, upstream: Upstream) -> dict[str, Any]:
    """The scoring keys, and those of the report alone: its intervals, the judge and the review sheet."""
    config = {**project.eval_spec().model_dump(mode="json", include={"bootstrap_samples", "judge"}),
              **project.review().model_dump(mode="json")}  # fmt: skip
    return {**_upstream(upstream, Stage.prepare, Stage.baseline, Stage.train), **_scoring_inputs(project),
            **flatten(config, "eval.")}  # fmt: skip


def _eval(project: Project, upstream: Upstream, context: StageContext) -> StageOutput:
    from tunesmith.eval.evaluate import Candidate
    from tunesmith.eval.report import combine_reports
    from tunesmith.project.review import write_review_sheet

    out = project.state_dir / "eval" / context.key[:12]
    adapter = Path(upstream[Stage.train].outputs["adapter"])
    _evaluate(project, [Candidate(FINE_TUNED, adapter_dir=adapter)], out / FINE_TUNED, context.show_progress)
    baseline = project.root / upstream[Stage.baseline].outputs["path"]
    report = combine_reports([baseline, out / FINE_TUNED], out)
    if project.eval_spec().judge is not None:
        report = _judge(project, out)
    review = project.review()
    if review.review_rubric:
        write_review_sheet(out, review.review_rubric, review.review_examples)
    run_id = upstream[Stage.train].identity
    evaluation_id = context.registry.record_evaluation(run_id, report, out)
    outputs = {"path": _relative(project, out), "metrics": _values(report), "evaluation_id": evaluation_id,
               "run_id": run_id, "adapter": str(adapter)}  # fmt: skip
    return StageOutput(outputs, _report_hash(report), _headline(report))


def _report_hash(report: dict[str, Any]) -> str:
    """The report's figures, not its timings: a new review rubric re-evaluates without re-gating."""
    models = [{k: v for k, v in model.items() if k != "examples_per_second"} for model in report["models"]]
    content = {**{key: value for key, value in report.items() if key != "created_at"}, "models": models}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()


def _judge(project: Project, out: Path) -> dict[str, Any]:
    from tunesmith.eval.evaluate import load_eval_examples
    from tunesmith.eval.judge import judge_evaluation, make_judge

    judge, limit = project.eval_spec().judge, project.eval_spec().limit
    assert judge is not None
    examples = load_eval_examples(project.prepared_dir, None, "test")[0][:limit]
    questions = [example.prompt_messages()[-1]["content"] for example in examples]
    return judge_evaluation(
        make_judge(judge.model, judge.base_url, judge.api_key_env), out, questions, judge.criteria,
        pairwise=judge.pairwise, limit=judge.limit,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- gate


def _gate_inputs(project: Project, upstream: Upstream) -> dict[str, Any]:
    assert project.spec.gate is not None
    return {**_upstream(upstream, Stage.eval), **flatten(project.spec.gate.model_dump(mode="json"), "gate.")}


def _gate(project: Project, upstream: Upstream, context: StageContext) -> StageOutput:
    gate = project.spec.gate
    assert gate is not None
    evaluation = upstream[Stage.eval].outputs
    report_dir = project.root / evaluation["path"]
    report = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    checks = check_gate(report, gate.metrics, gate.beat, gate.min_difference, gate.significant)
    verdict = gate_verdict(checks, gate.model_dump(mode="json"), evaluation["evaluation_id"],
                           evaluation["run_id"], evaluation["adapter"])  # fmt: skip
    context.registry.record_gate_verdict(verdict, report_dir)  # a failed verdict too, before the stop
    failed = [check.line for check in checks if not check.passed]
    if failed:
        raise GateFailed("the adapter did not clear the gate:\n  " + "\n  ".join(failed))
    passed = "; ".join(check.line for check in checks)
    # A gate passes or raises, so its identity is the pass: a later stage reruns for a new adapter, not
    # for the same adapter passing a re-evaluation again.
    return StageOutput({"checks": [check.line for check in checks]}, "passed", f"passed: {passed}")


def _no_outputs(project: Project, outputs: dict[str, Any], registry: Registry) -> str | None:
    return None


# ---------------------------------------------------------------------------------------------- register


def _register_inputs(project: Project, upstream: Upstream) -> dict[str, Any]:
    return {**_upstream(upstream, Stage.train, Stage.gate), "deploy.adapter": project.spec.adapter_name,
            "deploy.tenant": project.spec.deploy.tenant}  # fmt: skip


def _register(project: Project, upstream: Upstream, context: StageContext) -> StageOutput:
    store = ServingStore(context.registry)
    run_id = upstream[Stage.train].identity  # by run id, so the adapter version names its run (lineage)
    adapter = store.register_source(project.spec.adapter_name, run_id, tenant=project.spec.deploy.tenant)
    outputs = {"adapter": adapter.key, "path": adapter.path, "run_id": run_id}
    return StageOutput(outputs, adapter.key, f"{adapter.key} from {run_id}")


def _register_missing(project: Project, outputs: dict[str, Any], registry: Registry) -> str | None:
    name, _, version = str(outputs["adapter"]).partition("@")
    try:
        ServingStore(registry).find_adapter(_ADMIN, name, int(version))
    except NotFoundError:
        return f"adapter {outputs['adapter']} is not in the registry ({registry.url})"
    return None


# ---------------------------------------------------------------------------------------------- deploy


def _deploy_inputs(project: Project, upstream: Upstream) -> dict[str, Any]:
    return {**_upstream(upstream, Stage.register), "deploy.deployment": project.spec.deployment_name,
            "deploy.tenant": project.spec.deploy.tenant}  # fmt: skip


def _deploy(project: Project, upstream: Upstream, context: StageContext) -> StageOutput:
    store = ServingStore(context.registry)
    name, adapter = project.spec.deployment_name, upstream[Stage.register].identity
    if store.find_deployment(_ADMIN, name) is None:
        store.create_deployment(
            name, [{"model": adapter, "weight": 100.0}], tenant=project.spec.deploy.tenant
        )
    else:
        store.promote(name, adapter)  # recorded in its history: `tunesmith deploy rollback` undoes it
    return StageOutput(
        {"deployment": name, "variant": adapter}, adapter, f"{name} -> {adapter} (100% of traffic)"
    )


def _deploy_missing(project: Project, outputs: dict[str, Any], registry: Registry) -> str | None:
    if ServingStore(registry).find_deployment(_ADMIN, outputs["deployment"]) is None:
        return f"deployment {outputs['deployment']} is not in the registry ({registry.url})"
    return None


STAGES: dict[Stage, StageSteps] = {
    Stage.prepare: StageSteps(_prepare_inputs, _prepare, _prepare_missing),
    Stage.baseline: StageSteps(_baseline_inputs, _baseline, _report_missing),
    Stage.train: StageSteps(_train_inputs, _train, _train_missing),
    Stage.eval: StageSteps(_eval_inputs, _eval, _report_missing),
    Stage.gate: StageSteps(_gate_inputs, _gate, _no_outputs),
    Stage.register: StageSteps(_register_inputs, _register, _register_missing),
    Stage.deploy: StageSteps(_deploy_inputs, _deploy, _deploy_missing),
}
