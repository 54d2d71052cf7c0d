"""Everything a loop cycle needs, checked before anything changes: the deployment, its champion and the
champion's run, the candidate's training settings, the frozen test set and the task's metrics.

Owns: `check_loop`, which turns bad input (no such deployment, no champion adapter, a champion without a
run, a gate metric the task lacks, training overrides that do not validate, no frozen test set, a bias
gate that cannot run) into one clear error before a cycle is started or moved, and `LoopContext`, what
the steps read. Does not own the steps (`build`, `release`) or the policy file (`policy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.audit.counterfactual import Attribute
from tunesmith.config import ConfigError, EvalTask, TrainSpec, build_spec, tunesmith_home
from tunesmith.data.ingest import is_prepared_dataset
from tunesmith.data.records import Example
from tunesmith.loop.policy import LOOP_SETS_TRAIN_KEYS, LoopPolicySpec, bias_attributes
from tunesmith.registry.monitor_store import MonitorStore
from tunesmith.registry.serving_records import AdapterVersion, Caller
from tunesmith.registry.serving_store import BASE_MODEL_NAME, NotFoundError, ServingStore, parse_model_ref
from tunesmith.registry.store import Registry

ADMIN = Caller(tenant=None, is_admin=True)


@dataclass(frozen=True)
class LoopContext:
    registry: Registry
    deployment: str
    policy: LoopPolicySpec
    champion: AdapterVersion
    champion_run: dict[str, Any]  # the registry's run record, with its config
    train_settings: dict[str, Any]  # the candidate's `train:` section, less data, out and init_adapter
    frozen_test: Path
    test_examples: list[Example]
    test_hash: str
    task: EvalTask
    metrics: list[str]
    bias_attributes: dict[str, Attribute]  # what the bias gate swaps; empty without `gate.bias`

    def workdir(self, loop_id: int) -> Path:
        """Where cycle `loop_id` keeps its dataset, run and gate reports."""
        return tunesmith_home() / "loops" / f"{self.deployment}-{loop_id}"


def check_loop(
    registry: Registry, deployment: str, policy: LoopPolicySpec, champion: str | None = None
) -> LoopContext:
    """The context of a cycle on `deployment` whose champion is `champion` (default: the one variant it
    serves); raises ConfigError (NotFoundError for a missing deployment) on anything that cannot work."""
    found = ServingStore(registry).find_deployment(ADMIN, deployment)
    if found is None:
        raise NotFoundError(f"no deployment named {deployment} (see `tunesmith deploy list`)")
    if champion is None:
        champion = _champion_of(deployment, [(v["model"], v["weight"]) for v in found["variants"]])
    adapter = ServingStore(registry).find_adapter(ADMIN, *parse_model_ref(champion))
    run_id = MonitorStore(registry).adapter_run_id(adapter.name, adapter.version)
    run = registry.get_run(run_id) if run_id else None
    if run is None:
        raise ConfigError(
            f"champion {adapter.key} was registered from a folder, not trained by a recorded run: the loop "
            "takes the candidate's training settings and data from the champion's run"
        )
    settings = _train_settings(run["config"], policy)
    frozen = _frozen_test(policy, run["config"])
    from tunesmith.eval.evaluate import load_eval_examples
    from tunesmith.eval.tasks import detect_task

    examples, digest = load_eval_examples(frozen, None, "test")
    task = policy.gate.task or detect_task(examples)
    metrics = _check_metrics(policy, task)
    return LoopContext(registry, deployment, policy, adapter, run, settings, frozen, examples[: policy.gate.limit],
                       digest, task, metrics, _check_bias(policy))  # fmt: skip


def _champion_of(deployment: str, variants: list[tuple[str, float]]) -> str:
    serving = [model for model, weight in variants if weight > 0]
    if len(serving) != 1:
        raise ConfigError(
            f"deployment {deployment} splits traffic between {', '.join(serving)}: the loop starts from one "
            "champion; end that test first (`tunesmith deploy promote`)"
        )
    if serving[0] == BASE_MODEL_NAME:
        raise ConfigError(
            f"deployment {deployment} serves the base model: it has no champion adapter to improve; deploy "
            "a trained adapter first (`tunesmith deploy create`)"
        )
    return serving[0]


def _train_settings(config: dict[str, Any], policy: LoopPolicySpec) -> dict[str, Any]:
    """The champion run's settings with the policy's overrides; checked now with a stand-in data path."""
    settings = {key: value for key, value in config.items() if key not in LOOP_SETS_TRAIN_KEYS}
    if policy.train.objective != "sft":  # a preference run logs its own metrics, not generations
        settings = {
            k: v for k, v in settings.items() if k not in ("eval_metrics", "eval_samples", "select_by")
        }
    settings |= policy.train.overrides
    check = {**settings, "data": "-", "method": policy.train.objective}
    try:
        build_spec(TrainSpec, check, {})
    except ConfigError as error:
        raise ConfigError(
            f"the candidate's training settings (the champion's run and train.overrides): {error}"
        ) from error
    return settings


def _frozen_test(policy: LoopPolicySpec, config: dict[str, Any]) -> Path:
    if policy.gate.frozen_test is not None:
        if not policy.gate.frozen_test.exists():
            raise ConfigError(f"gate.frozen_test: {policy.gate.frozen_test} does not exist")
        return policy.gate.frozen_test
    data = Path(str(config.get("data", "")))
    if not is_prepared_dataset(data) or not (data / "test.jsonl").is_file():
        raise ConfigError(
            f"gate.frozen_test: the champion trained on {data}, not a prepared dataset with a test split; "
            "give the frozen test set in the policy"
        )
    return data


def _check_metrics(policy: LoopPolicySpec, task: EvalTask) -> list[str]:
    from tunesmith.eval.tasks import metric_names

    try:
        scored = metric_names(task, policy.gate.metrics)
    except ConfigError as error:
        raise ConfigError(str(error).replace("eval.metrics", "gate.metrics", 1)) from error
    if policy.gate.metric not in scored:
        raise ConfigError(
            f"gate.metric: {policy.gate.metric!r} is not scored on a {task} task; choose from {scored}"
        )
    unscored = [name for name in policy.gate.tolerances if name not in scored]
    if unscored:
        raise ConfigError(
            f"gate.tolerances: {unscored} are not scored on a {task} task; choose from {scored}"
        )
    return scored


def _check_bias(policy: LoopPolicySpec) -> dict[str, Attribute]:
    """The bias gate's attributes, checked against its test data now: no candidate is trained for a gate
    that cannot run (no such file, measures the task lacks, no prompt mentioning any term)."""
    bias = policy.gate.bias
    if bias is None:
        return {}
    from tunesmith.audit.bias_findings import build_pairs, gated_measures, require_pairs
    from tunesmith.eval.evaluate import load_eval_examples
    from tunesmith.eval.tasks import detect_task

    if not bias.data.exists():
        raise ConfigError(f"gate.bias.data: {bias.data} does not exist")
    attributes = bias_attributes(bias)
    examples = load_eval_examples(bias.data, bias.format, "test")[0][: bias.limit]
    gated_measures(detect_task(examples), bias.gate_measures, "gate.bias.gate_measures")
    try:
        require_pairs(build_pairs(examples, attributes), attributes)
    except ConfigError as error:
        raise ConfigError(f"gate.bias.data: {error}") from error
    return attributes
