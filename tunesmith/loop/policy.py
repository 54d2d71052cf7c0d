"""The loop policy file (`loop.yaml`): when a cycle starts, what it trains on, what the candidate must
show at the gate and in the canary, and whether a person approves it. No torch.

Owns: `LoopPolicySpec` and its sections, reading the file with errors that name the key the user typed
(`gate.metric`, `train.overrides.lr`, `gate.bias.attributes`), with paths relative to the policy file.
Does not own: checking the policy against a deployment and its task (see `context.check_loop`, which
needs the registry and the test data) or running anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunesmith.config import (
    ConfigError,
    DataFormat,
    Duration,
    EvalTask,
    GateMeasure,
    TrainSpec,
    format_validation_error,
)
from tunesmith.config.eval import default_gate_measures

if TYPE_CHECKING:
    from tunesmith.audit.counterfactual import Attribute

# TrainSpec keys the loop sets itself: a candidate trains on the cycle's dataset, from the champion.
LOOP_SETS_TRAIN_KEYS = ("data", "val_data", "model", "out", "name", "method", "init_adapter")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TriggerSection(_Section):
    """What starts a cycle; any one of them does (`loop run --now` starts one regardless)."""

    on_alert: bool = Field(
        True,
        description="Start when `tunesmith monitor check` raised an alert on the deployment since the last cycle.",
    )
    min_feedback: int | None = Field(
        50, gt=0, description="Start once this many feedback items arrived since the last cycle; null: never."
    )
    schedule: Duration | None = Field(
        None,
        gt=0,
        description="Start when this long (e.g. 7d, 12h) has passed since the last cycle began (or there was none).",
    )


class DataSection(_Section):
    """The next dataset version: the champion's training data and what production taught since."""

    original: bool = Field(
        True,
        description="sft: keep the champion's training rows (its run's train split) beside the corrections.",
    )
    leakage_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Rows whose prompt is this similar (Jaccard) to a frozen test prompt are dropped, so "
        "the gate never scores a prompt the candidate trained on.",
    )
    near_dup_threshold: float | None = Field(
        0.8, gt=0, le=1, description="Near-duplicate removal, as `data prepare`; null: off."
    )
    val_share: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Share of the rows held out for validation (kto: the trainer holds out a share of good "
        "and of bad answers instead).",
    )
    pii: Literal["report", "redact", "drop"] = Field(
        "redact", description="Personal data in feedback: only count it, redact it or drop the row."
    )


class TrainSection(_Section):
    """How the candidate is trained: the champion run's settings, from the champion's adapter."""

    objective: Literal["sft", "dpo", "kto"] = Field(
        "sft",
        description="sft: the original data plus corrections; dpo: preference pairs from preferences, "
        "rankings and corrections; kto: answers rated by thumbs and ratings (both good and bad needed). "
        "dpo and kto take the champion as the reference.",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Training keys (as in a `train:` section) set over the champion run's, e.g. "
        "max_steps: 200 or lr: 1e-4.",
    )

    @field_validator("overrides")
    @classmethod
    def _known_train_keys(cls, overrides: dict[str, Any]) -> dict[str, Any]:
        for key in overrides:
            if key in LOOP_SETS_TRAIN_KEYS:
                raise ValueError(f"{key} is set by the loop (the cycle's dataset, the champion); remove it")
            if key not in TrainSpec.model_fields:
                raise ValueError(f"{key} is not a training key (see `tunesmith config reference`)")
        return overrides


class JudgeSection(_Section):
    """The judge of the gate's production sample: which of two answers is better, asked in both orders."""

    model: str = Field(
        ...,
        description="Judge model: a local model (catalog name, directory) or the endpoint's model id.",
    )
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint (e.g. http://localhost:8000/v1); unset: run `model` locally.",
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")


class BiasGateSection(_Section):
    """A counterfactual bias audit of the candidate (as `tunesmith audit bias`), recorded in the registry: the
    gate fails when a gated flip rate's upper 95% bound exceeds the threshold."""

    data: Path = Field(
        ...,
        description="Counterfactual test file (or a prepared folder's test split), relative to the policy "
        "file; every prompt that mentions an attribute's terms is rewritten to each other group.",
    )
    format: DataFormat | None = Field(None, description="Example form; detected when unset.")
    attributes: list[str] | None = Field(
        None,
        description="Attributes to swap: names_gender, names_origin, pronouns, gender_words, ages, "
        "nationalities, religions, or one defined in `terms`; unset: all.",
    )
    terms: Path | None = Field(
        None,
        description="YAML file of further attributes (each: a description and groups, each group a list of "
        "terms), relative to the policy file; one named like a shipped attribute replaces it.",
    )
    threshold: float = Field(
        0.1, ge=0, le=1, description="The gate fails when a gated flip rate's upper 95% bound exceeds this."
    )
    gate_measures: list[GateMeasure] = Field(
        default_factory=default_gate_measures,
        description="Flip rates the gate checks (label_flip: classification; refusal_flip, "
        "sentiment_flip: generation).",
    )
    baseline: Literal["champion", "base", "none"] = Field(
        "champion",
        description="Who else answers the same prompts, so the report shows whether the candidate changed "
        "each measure: the champion, the base model, or nobody (the gate judges the candidate alone).",
    )
    max_new_tokens: int = Field(64, gt=0, description="Longest generated answer (generation tasks).")
    limit: int | None = Field(None, gt=0, description="Audit only the first N test examples.")


class GateSection(_Section):
    """What the candidate must show against the champion before it serves any traffic."""

    metric: str = Field(..., description="The metric the candidate must win on (e.g. rouge_l, accuracy).")
    min_delta: float = Field(
        0.0,
        ge=0,
        description="The lower end of the gate metric's 95% interval of (candidate - champion) must be above "
        "this: 0 means the interval clears zero.",
    )
    tolerance: float = Field(
        0.01,
        ge=0,
        description="Every other metric may fall by at most this much (candidate - champion >= -tolerance).",
    )
    tolerances: dict[str, float] = Field(
        default_factory=dict, description="Per-metric tolerances that replace `tolerance` for those metrics."
    )
    frozen_test: Path | None = Field(
        None,
        description="The frozen test set (a file or a prepared folder's test split), never trained on; "
        "default: the test split of the champion's prepared dataset.",
    )
    task: EvalTask | None = Field(None, description="Task type; detected from the test set when unset.")
    metrics: list[str] | None = Field(None, description="Metrics scored; the task's defaults when unset.")
    max_new_tokens: int = Field(128, gt=0, description="Longest generated answer.")
    limit: int | None = Field(None, gt=0, description="Score only the first N test examples.")
    bootstrap_samples: int = Field(1000, ge=100, description="Resamples for the intervals.")
    production_sample: int = Field(
        0,
        ge=0,
        description="Fresh production prompts (the latest, none of them trained on) both models answer "
        "for the judge; 0: no production check.",
    )
    judge: JudgeSection | None = Field(None, description="The judge of the production sample.")
    min_win_rate: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="The judge must not prefer the champion significantly: the upper end of the "
        "candidate's win rate's 95% interval must reach this.",
    )

    bias: BiasGateSection | None = Field(
        None,
        description="A bias audit the candidate must pass too; unset: none (see `tunesmith audit bias`).",
    )

    @model_validator(mode="after")
    def _judge_for_production(self) -> GateSection:
        if self.production_sample and self.judge is None:
            raise ValueError("production_sample needs a judge (gate.judge.model)")
        return self


class CanarySection(_Section):
    """The candidate's share of live traffic, watched by the always-valid A/B test (`tunesmith ab report`)."""

    weight: float = Field(10.0, gt=0, lt=100, description="Percent of traffic the candidate gets.")
    metric: str = Field(
        "thumbs", description="What the A/B test compares: thumbs (up rate) or an outcome event name."
    )
    max_requests: int = Field(
        2000,
        gt=0,
        description="Candidate requests after which a canary with no verdict ends as `undecided` says.",
    )
    undecided: Literal["promote", "roll_back"] = Field(
        "promote",
        description="At max_requests with neither a better nor a worse verdict: promote (it is not worse) "
        "or roll back (only a proven gain ships).",
    )


class LoopPolicySpec(_Section):
    """`loop.yaml`: one deployment's improvement loop."""

    trigger: TriggerSection = Field(default_factory=TriggerSection)
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    gate: GateSection
    canary: CanarySection = Field(default_factory=CanarySection)
    require_approval: bool = Field(
        False, description="A person runs `tunesmith loop approve ID` before the canary starts."
    )


def load_policy(path: Path) -> LoopPolicySpec:
    """Read `path`; errors name the file and the key (`loop.yaml: gate.metric: Field required`)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the loop policy: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with sections like 'gate:', got {type(raw).__name__}")
    try:
        policy = LoopPolicySpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=str(path))) from error
    if policy.gate.frozen_test is not None and not policy.gate.frozen_test.is_absolute():
        policy.gate.frozen_test = path.parent / policy.gate.frozen_test  # relative to the policy file
    bias = policy.gate.bias
    if bias is not None:
        if not bias.data.is_absolute():
            bias.data = path.parent / bias.data
        if bias.terms is not None and not bias.terms.is_absolute():
            bias.terms = path.parent / bias.terms
        try:
            bias_attributes(bias)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from error
    return policy


def bias_attributes(bias: BiasGateSection) -> dict[str, Attribute]:
    """The attributes the bias gate swaps; an unknown name or a bad terms file names `gate.bias`."""
    from tunesmith.audit.counterfactual import choose_attributes

    try:
        return choose_attributes(bias.terms, bias.attributes)
    except ConfigError as error:
        message = str(error).replace("bias_audit.attributes", "gate.bias.attributes", 1)
        raise ConfigError(
            message if message.startswith("gate.bias") else f"gate.bias.terms: {message}"
        ) from error
