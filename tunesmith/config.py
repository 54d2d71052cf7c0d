"""Typed specs shared by the CLI, the library and (later) the API, plus where tunesmith keeps its files.

Owns: the pydantic models that describe a training or evaluation job, loading them from YAML with
errors that name the key the user typed, and the `TUNESMITH_HOME` layout. Does not own: anything
that runs a job; this module never imports torch, so `tunesmith --help` starts fast.
"""

from __future__ import annotations

import copy
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

DEFAULT_MODEL = "smollm2-135m-instruct"
SpecT = TypeVar("SpecT", bound=BaseModel)


def _yaml_switch(value: Any) -> Any:
    """YAML reads a bare `on`/`off` (and yes/no, true/false) as a boolean: take it as the word."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml_switch)]

_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?"
)


def duration_seconds(value: Any) -> Any:
    """`30d`, `20m`, `1h30m`, `90s` or a plain number of seconds, as seconds (other values are left to the type)."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        try:
            return float(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a duration; write e.g. 30d, 20m, 1h30m, 90s or 1200"
            ) from None
    days, hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


Duration = Annotated[float, BeforeValidator(duration_seconds)]


def tunesmith_home() -> Path:
    """Root of caches, runs and the registry: `$TUNESMITH_HOME`, else `~/.cache/tunesmith`."""
    env = os.environ.get("TUNESMITH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tunesmith"


def default_database_url() -> str:
    """The registry database: `$TUNESMITH_DATABASE_URL`, else SQLite under `TUNESMITH_HOME`."""
    env = os.environ.get("TUNESMITH_DATABASE_URL")
    return env if env else f"sqlite:///{tunesmith_home() / 'registry.db'}"


class DataFormat(StrEnum):
    """The example forms tunesmith reads; all but preference pairs, rated answers and plain text become chat."""

    alpaca = "alpaca"  # instruction / input / output
    chat = "chat"  # messages: [{role, content}, ...] (OpenAI style)
    sharegpt = "sharegpt"  # conversations: [{from, value}, ...]
    prompt_completion = "prompt_completion"  # prompt / completion
    classification = "classification"  # text / label, rendered to chat with an instruction
    preference = "preference"  # prompt / chosen / rejected, chat-style chosen / rejected message lists, or
    #   OpenAI's input / preferred_output / non_preferred_output (preference pairs, not chat)
    rated = "rated"  # prompt / completion / label (true: a good answer, false: a bad one), for KTO
    text = "text"  # text only: documents for continued pretraining (not chat)


class Precision(StrEnum):
    """Numeric precision of the training step."""

    auto = "auto"  # bf16 autocast where the hardware runs it fast, fp32 otherwise
    bf16 = "bf16"
    fp32 = "fp32"


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})  # where a server without auth may listen


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSpec(_Spec):
    """Low-rank adapter settings."""

    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or 'all-linear' for every linear layer but the head.",
    )


class TrainSpec(_Spec):
    """One training job: supervised fine-tuning or preference tuning (DPO, KTO, ORPO)."""

    model: str = Field(
        DEFAULT_MODEL, description="Base model: catalog name, Hugging Face id or local directory."
    )
    data: Path = Field(
        ...,
        description="Training data: a file (JSONL, JSON, CSV or Parquet) or a folder from `tunesmith data "
        "prepare` (its train split, and its val split unless val_data is given).",
    )
    val_data: Path | None = Field(
        None, description="Validation data; enables val loss, early stopping and picking the best checkpoint."
    )
    hold_out_val: bool = Field(
        True,
        description="Without validation data (val_data, or a prepared folder's val split), hold out a seeded "
        "share of the training data for validation: a tenth, at least 32 examples (at most a fifth of the data), "
        "at most 256, stratified by label for classification. --no-val trains on all of it, without validation.",
    )
    format: DataFormat | None = Field(None, description="Example form; detected from the columns when unset.")
    method: Literal["sft", "dpo", "kto", "orpo"] = Field(
        "sft",
        description="Objective: sft (next-token loss on the answers), dpo (prompt/chosen/rejected pairs, against "
        "a frozen reference), kto (prompt/completion/label rows, thumbs up or down), orpo (pairs, no reference). "
        "The older values lora and full still mean sft with that tuning.",
    )
    tuning: Literal["lora", "full"] = Field(
        "lora", description="lora: train a LoRA adapter; full: train every weight (sft only)."
    )
    lora: LoraSpec = Field(default_factory=LoraSpec)
    init_adapter: Path | None = Field(
        None,
        description="Continue from this LoRA adapter (a run id or an adapter folder) instead of a fresh one; it "
        "must have been trained on the same base model, and its own rank and targets apply. DPO and KTO take "
        "it, as it was before training, as the reference.",
    )
    beta: float = Field(
        0.1, gt=0, description="dpo, kto: how far the policy may move from the reference (higher: less far)."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="dpo: the share of pairs assumed mislabelled (conservative DPO)."
    )
    rpo_alpha: float = Field(
        0.0,
        ge=0,
        description="dpo: weight of the chosen answers' per-token loss added to DPO's (RPO; TRL's rpo_alpha): "
        "keeps preferred answers likely where a pair differs in a few tokens.",
    )
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of the thumbs-up rows' loss.")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of the thumbs-down rows' loss.")
    orpo_lambda: float = Field(
        0.1, gt=0, description="orpo: weight of the odds-ratio term beside the chosen answers' loss."
    )
    epochs: float = Field(
        3.0, gt=0, description="Passes over the training data (ignored with max_steps or a budget)."
    )
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps.")
    time_budget: Duration | None = Field(
        None,
        gt=0,
        description="Train for this long (20m, 1h30m, 90s; a number is seconds) instead of for epochs: the steps "
        "that fit are planned from this machine's speed and planned again from each step's measured time, the "
        "learning rate is scheduled over them, and the run stops at the budget keeping its best checkpoint. It "
        "covers the training loop (steps, validation, checkpoints), not loading the model and data. max_steps "
        "still caps it.",
    )
    token_budget: int | None = Field(
        None,
        gt=0,
        description="Train on this many tokens (padding excluded) instead of for epochs: the steps that fit, the "
        "learning rate scheduled over them. max_steps still caps it.",
    )
    batch_size: int = Field(8, gt=0, description="Examples per batch, packed into rows (no padding waste).")
    grad_accum: int = Field(1, gt=0, description="Batches per optimizer step.")
    lr: float | None = Field(
        None,
        gt=0,
        description="Peak learning rate; default 2e-4 for LoRA (5e-5 for dpo, kto, orpo), 2e-5 for full.",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up the LR.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    max_seq_len: int = Field(1024, ge=16, description="Longest example in tokens; longer ones are truncated.")
    pack_len: int = Field(
        1024,
        ge=16,
        description="Target packed-row length. Examples share rows up to this length without attending to each "
        "other (attention runs per example on CPUs), so longer rows mean less padding; a pass never runs "
        "padding past its own rows.",
    )
    precision: Precision = Field(
        Precision.auto,
        description="auto: bf16 autocast where the hardware runs it fast, fp32 otherwise; bf16; fp32.",
    )
    memory_limit_gb: float | None = Field(
        None,
        gt=0,
        description="Memory the run may use; default 90% of the GPU's free memory, or half the free RAM.",
    )
    micro_batch_tokens: int | None = Field(
        None,
        gt=0,
        description="Tokens per forward/backward pass (a batch's rows run in passes of this size); "
        "default: the most that fit the memory limit (at most 2,048 on CPU, and never more than a batch).",
    )
    gradient_checkpointing: Switch = Field(
        "auto",
        description="Recompute activations in backward to save memory (it costs about a third more compute). "
        "auto: only when one row would not fit the memory limit otherwise; on; off.",
    )
    compile: bool = Field(
        False,
        description="Compile the model body with torch.compile (fuses norms, RoPE and activations); pays "
        "off on long runs only: it first spends minutes compiling (benchmarks/RESULTS.md).",
    )
    fused_layers: Switch = Field(
        "auto",
        description="tunesmith's fused training functions for LoRA layers, SwiGLU MLPs and frozen RMSNorms: the "
        "same results with less kept for backward. auto: on CPUs; on CUDA when LoRA dropout is 0, or when "
        "their memory saving spares the step gradient checkpointing or smaller passes (with dropout they keep "
        "less for backward but run slower than peft's layers on CUDA: benchmarks/RESULTS.md). on: wherever "
        "they apply. "
        "off: peft's and transformers' own forwards. Never under compile.",
    )
    eval_every: int = Field(50, gt=0, description="Optimizer steps between validation passes.")
    save_every: int = Field(50, gt=0, description="Optimizer steps between resumable checkpoints.")
    keep_checkpoints: int = Field(2, gt=0, description="Most recent checkpoints kept on disk.")
    early_stopping_patience: int | None = Field(
        3, gt=0, description="Stop after this many validations without improvement (None: never)."
    )
    eval_metrics: list[str] | None = Field(
        None,
        description="Task metrics (e.g. rouge_l, accuracy) scored on a validation sample at each validation, "
        "logged beside the loss; unset: loss only.",
    )
    eval_samples: int = Field(32, gt=0, description="Validation examples the task metrics are scored on.")
    select_by: str = Field(
        "val_loss",
        description="What picks the best checkpoint and drives early stopping: val_loss (lower is better) "
        "or one of eval_metrics (higher is better).",
    )
    log_every: int = Field(1, gt=0, description="Optimizer steps between metric lines.")
    seed: int = Field(42, description="Seed for data order, adapter init and dropout.")
    name: str | None = Field(None, description="Adapter name in the registry; defaults to the run id.")
    out: Path | None = Field(None, description="Run directory; default TUNESMITH_HOME/runs/<run id>.")

    @model_validator(mode="before")
    @classmethod
    def _older_method_names_tuning(cls, data: Any) -> Any:
        """`method: lora|full` (the older spelling) is SFT with that tuning."""
        if not isinstance(data, dict) or data.get("method") not in ("lora", "full"):
            return data
        if data.get("tuning", data["method"]) != data["method"]:
            raise ValueError(
                f"method {data['method']!r} contradicts tuning {data['tuning']!r}; set tuning only"
            )
        return {**data, "method": "sft", "tuning": data["method"]}

    @model_validator(mode="after")
    def _preference_trains_an_adapter(self) -> TrainSpec:
        if self.method != "sft" and self.tuning != "lora":
            raise ValueError(
                f"method {self.method} trains a LoRA adapter (its reference is the model without it); "
                "set tuning: lora"
            )
        if self.init_adapter is not None and self.tuning != "lora":
            raise ValueError("init_adapter continues a LoRA adapter; set tuning: lora")
        if self.method != "sft" and self.eval_metrics:
            raise ValueError(f"eval_metrics score generations during sft; method {self.method} logs its own")
        return self

    @model_validator(mode="after")
    def _select_by_is_measured(self) -> TrainSpec:
        if self.select_by != "val_loss" and self.select_by not in (self.eval_metrics or []):
            raise ValueError(f"select_by {self.select_by!r} must be val_loss or one of eval_metrics")
        return self

    def resolved_lr(self) -> float:
        """The learning rate this job uses."""
        if self.lr is not None:
            return self.lr
        if self.tuning == "full":
            return 2e-5
        return 2e-4 if self.method == "sft" else 5e-5


class EvalTask(StrEnum):
    """What is being evaluated; decides how predictions are made and which metrics apply."""

    classification = "classification"  # label scored by log-likelihood; accuracy, macro P/R/F1
    generation = "generation"  # free text; ROUGE-1/2/L, BLEU, chrF, exact match (+ METEOR, CIDEr)
    qa = "qa"  # short answers; normalised exact match and token F1
    numeric = "numeric"  # the number after `####` (else the last number) must match


class JudgeSpec(_Spec):
    """An LLM judge: a local model or any OpenAI-compatible endpoint scores the answers."""

    model: str = Field(
        ...,
        description="Judge model, which turns the LLM judge on: a local model (catalog name, directory) or the "
        "endpoint's model id.",
    )
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint (e.g. http://localhost:8000/v1); unset: run `model` locally.",
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    criteria: dict[str, str] = Field(
        default_factory=lambda: {
            "accuracy": "Is the answer factually correct and consistent with the reference answer?",
            "helpfulness": "Does the answer address what the user asked, completely and clearly?",
        },
        description="Rubric: criterion name -> what a 5 means; each answer gets 1-5 per criterion.",
    )
    pairwise: bool = Field(True, description="Also ask which of two models' answers is better (both orders).")
    limit: int | None = Field(None, gt=0, description="Judge only the first N examples (judging is slow).")


class MonitorJudgeSpec(_Spec):
    """The monitor's sampled LLM judge: it scores a random sample of each window's answers (and as many
    of the window before) against a rubric; production answers have no reference answer."""

    model: str = Field(
        ...,
        description="Judge model, which turns the monitor's judge on: a local model (catalog name, directory) "
        "or the endpoint's model id.",
    )
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint (e.g. http://localhost:8000/v1); unset: run `model` locally.",
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")
    criteria: dict[str, str] = Field(
        default_factory=lambda: {
            "helpfulness": "Does the answer address what the user asked, completely and clearly?",
            "correctness": "Is the answer factually correct and free of contradictions, as far as you can tell?",
        },
        min_length=1,
        description="Rubric: criterion name -> what a 5 means; each sampled answer gets 1-5 per criterion.",
    )
    sample: int = Field(50, ge=2, description="Answers per window the judge scores (judging is slow).")


class EvalSpec(_Spec):
    """An evaluation of one or more models, with baselines, on a held-out file."""

    data: Path = Field(
        ...,
        description="Test file in any supported form, or a prepared dataset folder (its test split); the last "
        "assistant turn is the reference.",
    )
    format: DataFormat | None = Field(None, description="Example form; detected when unset.")
    train_data: Path | None = Field(
        None,
        description="Training data: the few-shot pool and the classification label set; unset: the "
        "evaluated run's training data.",
    )
    task: EvalTask | None = Field(
        None,
        description="Task type; detected when unset (classification when examples carry labels, numeric "
        "when every reference ends in '#### <number>', else generation).",
    )
    metrics: list[str] | None = Field(
        None, description="Metrics to compute; the task's defaults when unset ('meteor', 'cider' opt in)."
    )
    baselines: bool = Field(True, description="Score the base model zero-shot and few-shot as well.")
    shots: int = Field(5, ge=1, description="Demonstrations in the few-shot baseline prompt.")
    max_new_tokens: int = Field(128, gt=0, description="Longest generated answer.")
    num_beams: int = Field(
        1,
        gt=0,
        description="Beam search with this many beams (transformers' generate); 1: greedy or sampling.",
    )
    length_penalty: float = Field(
        1.0,
        description="Beam search: a beam's score is its log-probability divided by length ** length_penalty "
        "(above 0 favours longer answers, below 0 shorter ones).",
    )
    no_repeat_ngram_size: int = Field(
        0, ge=0, description="Never repeat an n-gram of this many tokens within an answer; 0: off."
    )
    repetition_penalty: float = Field(
        1.0,
        gt=0,
        description="Penalise tokens already in the prompt or answer (CTRL's penalty, > 1); 1: off.",
    )
    do_sample: bool = Field(
        False, description="Sample answers (temperature, top_p, seed) instead of decoding greedily."
    )
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (with do_sample).")
    top_p: float = Field(
        1.0, gt=0, le=1, description="Sampling: keep the smallest set of tokens with this mass."
    )
    seed: int = Field(0, description="Sampling seed.")
    batch_size: int = Field(16, gt=0, description="Prompts generated or scored together.")
    limit: int | None = Field(None, gt=0, description="Evaluate only the first N examples.")
    out_of_scope_label: str | None = Field(
        None,
        description="Classification: the label of examples that belong to none of the classes (e.g. oos). A "
        "prediction whose log-likelihood is below a threshold calibrated on calibration_data becomes this label; "
        "in-scope accuracy and out-of-scope recall are reported.",
    )
    calibration_data: Path | None = Field(
        None,
        description="With out_of_scope_label: labelled validation examples, some of them out of scope, that each "
        "model's threshold is calibrated on; default: the val split when data is a prepared dataset folder.",
    )
    bootstrap_samples: int = Field(
        1000, ge=100, description="Resamples for confidence intervals and the paired test."
    )
    judge: JudgeSpec | None = Field(None, description="Optional LLM judge.")

    @model_validator(mode="after")
    def _decoding_settings_apply(self) -> EvalSpec:
        if self.do_sample and self.num_beams > 1:
            raise ValueError("do_sample and num_beams > 1: choose sampling or beam search")
        if self.num_beams == 1 and self.length_penalty != 1.0:
            raise ValueError("length_penalty applies to beam search; set num_beams above 1")
        if not self.do_sample and (self.temperature != 1.0 or self.top_p != 1.0):
            raise ValueError("temperature and top_p apply to sampling; set do_sample")
        if self.calibration_data is not None and self.out_of_scope_label is None:
            raise ValueError("calibration_data calibrates the out-of-scope threshold; set out_of_scope_label")
        return self


GateMeasure = Literal["label_flip", "refusal_flip", "sentiment_flip"]


def _default_gate_measures() -> list[GateMeasure]:
    return ["label_flip", "refusal_flip"]


class BiasAuditSpec(_Spec):
    """A counterfactual bias audit: test prompts with names, pronouns, ages ... swapped; do answers change?"""

    data: Path = Field(
        ...,
        description="Test file in any supported form, or a prepared dataset folder (its test split); every "
        "prompt that mentions an attribute's terms is rewritten to each other group.",
    )
    format: DataFormat | None = Field(None, description="Example form; detected when unset.")
    attributes: list[str] | None = Field(
        None,
        description="Attributes to swap: names_gender, names_origin, pronouns, gender_words, ages, "
        "nationalities, religions, or one defined in `terms`; unset: all.",
    )
    terms: Path | None = Field(
        None,
        description="YAML file of further attributes (each: a description and groups, each group a list of terms); one "
        "named like a shipped attribute replaces it.",
    )
    threshold: float = Field(
        0.1, ge=0, le=1, description="--gate fails when a gated flip rate's upper 95% bound exceeds this."
    )
    gate_measures: list[GateMeasure] = Field(
        default_factory=_default_gate_measures,
        description="Flip rates the gate checks (label_flip: classification; refusal_flip, "
        "sentiment_flip: generation).",
    )
    baseline: bool = Field(
        True, description="Audit the base model too, and test whether fine-tuning changed each measure."
    )
    group_column: str | None = Field(
        None, description="Column of the test data naming each example's group: the task metric per group."
    )
    train_data: Path | None = Field(
        None,
        description="Training data for the representation report and the label set; unset: the audited "
        "run's training data.",
    )
    max_new_tokens: int = Field(64, gt=0, description="Longest generated answer (generation tasks).")
    batch_size: int = Field(16, gt=0, description="Prompts generated or scored together.")
    limit: int | None = Field(None, gt=0, description="Audit only the first N test examples.")
    bootstrap_samples: int = Field(1000, ge=100, description="Resamples for intervals and the paired test.")
    seed: int = Field(0, description="Seed of the bootstrap resamples.")
    judge: JudgeSpec | None = Field(
        None,
        description="Optional LLM judge (generation): rubric score differences; pairwise does not apply.",
    )

    @model_validator(mode="after")
    def _judge_every_answer(self) -> BiasAuditSpec:
        if self.judge is not None and self.judge.limit is not None:
            raise ValueError("judge.limit: the audit judges every answer (a pair needs both of its answers)")
        return self


class GuardAction(StrEnum):
    """What a guard does with text it matches."""

    off = "off"  # not checked
    flag = "flag"  # recorded and counted; the text passes unchanged
    redact = "redact"  # each match replaced by its placeholder ([EMAIL], [BLOCKED], [NAME] of a pattern)
    block = "block"  # input: the request is refused; output: the response ends, finish_reason content_filter


Action = Annotated[GuardAction, BeforeValidator(_yaml_switch)]  # a bare YAML `off` is the word
PiiKind = Literal["EMAIL", "PHONE", "CARD", "IBAN", "IP", "SSN"]  # the kinds `data.pii` detects


class PiiGuardSpec(_Spec):
    """Personal data in prompts and answers, found by the data preparation detectors (`data.pii`)."""

    input: Action = Field(GuardAction.off, description="Action on PII in the prompt.")
    output: Action = Field(GuardAction.off, description="Action on PII in the answer.")
    kinds: list[PiiKind] = Field(
        ["EMAIL", "PHONE", "CARD", "IBAN", "IP", "SSN"], min_length=1, description="Kinds of PII checked."
    )


class TermsGuardSpec(_Spec):
    """Blocked words and phrases (case-insensitive, whole words) and named regular expressions."""

    blocklist: list[str] = Field(default_factory=list, description="Words or phrases; a match is [BLOCKED].")
    patterns: dict[str, str] = Field(
        default_factory=dict,
        description="NAME: REGEX (Python syntax, checked at load); a match is [NAME] when redacted.",
    )
    input: Action = Field(GuardAction.block, description="Action on a match in the prompt.")
    output: Action = Field(GuardAction.block, description="Action on a match in the answer.")

    @model_validator(mode="after")
    def _check_patterns(self) -> TermsGuardSpec:
        for name, pattern in self.patterns.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
                raise ValueError(
                    f"patterns.{name}: a name is UPPER_CASE (it becomes the placeholder [{name}])"
                )
            try:
                compiled = re.compile(pattern)
            except re.error as error:
                raise ValueError(f"patterns.{name}: not a regular expression: {error}") from None
            if compiled.search(""):
                raise ValueError(f"patterns.{name}: matches the empty string, so it would match everywhere")
        if any(not term.strip() for term in self.blocklist):
            raise ValueError("blocklist: an empty term would match everywhere")
        return self


class TopicGuardSpec(_Spec):
    """A topic allow-list: a prompt is on topic when its last user message holds an allowed keyword."""

    allow: list[str] = Field(
        default_factory=list,
        description="Keywords (case-insensitive whole words, a trailing plural s ignored); empty: any topic.",
    )
    action: Action = Field(GuardAction.block, description="Action on an off-topic prompt (flag or block).")

    @model_validator(mode="after")
    def _check_action(self) -> TopicGuardSpec:
        if self.action is GuardAction.redact:
            raise ValueError("action: an off-topic prompt has nothing to redact; use off, flag or block")
        return self


class ClassifierGuardSpec(_Spec):
    """A tunesmith classification fine-tune used as a moderation model on prompts (and answers)."""

    adapter: str = Field(..., description="The classifier adapter, `name` or `name@version`, on this base.")
    labels: list[str] = Field(..., min_length=2, description="Every label it was trained on.")
    blocked_labels: list[str] = Field(..., min_length=1, description="Labels that block a text.")
    threshold: float = Field(
        0.5, gt=0, le=1, description="Block when the blocked labels' share of probability is at least this."
    )
    instruction: str | None = Field(
        None,
        description="The instruction it was trained with (default: `data prepare`'s for text/label rows).",
    )
    answers: bool = Field(
        False,
        description="Also classify each whole answer; a streamed answer is then sent only once complete.",
    )

    @model_validator(mode="after")
    def _check_labels(self) -> ClassifierGuardSpec:
        unknown = sorted(set(self.blocked_labels) - set(self.labels))
        if unknown:
            raise ValueError(f"blocked_labels: {', '.join(unknown)} not among labels")
        return self


class GuardrailSpec(_Spec):
    """Guardrails of one deployment or adapter: what a prompt and its answer are checked for."""

    pii: PiiGuardSpec = Field(default_factory=PiiGuardSpec, description="Personal data.")
    terms: TermsGuardSpec = Field(default_factory=TermsGuardSpec, description="Blocklist and patterns.")
    topics: TopicGuardSpec = Field(default_factory=TopicGuardSpec, description="Topic allow-list.")
    max_input_chars: int | None = Field(None, gt=0, description="Longest prompt text; longer is refused.")
    max_output_chars: int | None = Field(
        None, gt=0, description="Longest answer; it ends there with finish_reason length."
    )
    classifier: ClassifierGuardSpec | None = Field(None, description="A moderation adapter on prompts.")
    refusal: str | None = Field(
        None,
        description="Answer a blocked prompt with this text (finish_reason content_filter) instead of a 400.",
    )


class ServeSpec(_Spec):
    """An OpenAI-compatible server: one base model, many LoRA adapters."""

    model: str = Field(
        DEFAULT_MODEL, description="Base model: catalog name, Hugging Face id or local directory."
    )
    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, lt=65536, description="Port to listen on (0: any free port).")
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="Adapters to register and load at start: NAME=PATH_OR_RUN_ID, an adapter folder or a run's "
        "adapter (in YAML a mapping, NAME: PATH_OR_RUN_ID).",
    )
    auth: bool = Field(
        True,
        description="Require API keys. Without them anyone who can reach the port may call: local use only.",
    )
    max_batch_size: int = Field(16, gt=0, description="Most requests decoded together in one batch.")
    max_wait_ms: float = Field(
        10.0, ge=0, description="How long the first queued request waits for others to join its batch."
    )
    max_loaded_adapters: int = Field(8, gt=0, description="Adapters kept in memory (least recently used go).")
    max_tokens_limit: int = Field(1024, gt=0, description="Largest `max_tokens` a request may ask for.")
    default_max_tokens: int = Field(256, gt=0, description="`max_tokens` when a request leaves it out.")
    max_request_bytes: int = Field(1_000_000, gt=0, description="Largest request body accepted.")
    max_n: int = Field(
        8, gt=0, description="Most choices per request (`n`, times the prompts of a completion)."
    )
    max_queued: int = Field(
        256,
        gt=0,
        description="Most generations waiting for a batch row; beyond it requests get a 503 with Retry-After.",
    )
    max_queue_wait_s: float = Field(
        60.0, gt=0, description="Seconds a generation may wait for a batch row before its request gets a 503."
    )
    request_timeout_s: float = Field(
        300.0,
        gt=0,
        description="Seconds a request may take from being queued to its last token; then its rows are freed and "
        "it gets a 503 (a stream already under way ends with an error event).",
    )
    tenant_max_concurrent: int | None = Field(
        None, gt=0, description="Requests one tenant may have in flight (more get a 429); None: no limit."
    )
    tenant_tokens_per_minute: int | None = Field(
        None,
        gt=0,
        description="Prompt plus `max_tokens` tokens one tenant may reserve per minute (more get a 429 with "
        "Retry-After); None: no limit.",
    )
    auth_failures_per_minute: int = Field(
        20, gt=0, description="Failed API keys one client address may send per minute before it gets 429s."
    )
    health_stall_s: float = Field(
        60.0,
        gt=0,
        description="`/health` reports 503 once the worker has had work this long without progress.",
    )
    require_bias_audit: bool = Field(
        False,
        description="Admin promote and weight changes refuse an adapter version without a passing bias audit "
        "(409), whatever the request says; as `tunesmith deploy promote --require-bias-audit`.",
    )
    log_requests: bool = Field(True, description="Store prompts and outputs in the registry for feedback.")
    log_retention: Duration | None = Field(
        None,
        gt=0,
        description="Purge logged requests older than this (e.g. 30d) at start and hourly (default: keep).",
    )
    monitor_every: Duration | None = Field(
        None,
        gt=0,
        description="Run `tunesmith monitor check` on every deployment this often (e.g. 10m) in the "
        "background; alerts land in the registry and /metrics (default: off).",
    )
    monitor_window: int = Field(1000, ge=10, description="Requests per window for the background monitor.")
    monitor_judge: MonitorJudgeSpec | None = Field(
        None,
        description="The background monitor's sampled LLM judge (see Keeping a model good in production); "
        "unset: no judge score (default).",
    )
    guardrails: dict[str, GuardrailSpec] = Field(
        default_factory=dict,
        description="Guardrails per deployment, adapter name or `base` (in YAML a mapping, TARGET: {pii: ...}; "
        "see Guardrails); what `tunesmith guardrails set` stores for a target replaces its entry here.",
    )
    threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads for torch (default: one per core). On a busy, shared CPU, 1 avoids threads "
        "waiting on each other (benchmarks/RESULTS.md).",
    )

    @model_validator(mode="after")
    def _check_open_only_on_loopback(self) -> ServeSpec:
        if not self.auth and self.host not in LOOPBACK_HOSTS:
            raise ValueError(
                f"auth: off (--no-auth) lets anyone who can reach the port call; only with host on this "
                f"machine ({', '.join(sorted(LOOPBACK_HOSTS))}), not host {self.host}"
            )
        return self


class PrepareSpec(_Spec):
    """Turning raw data files into a versioned train/val/test dataset with a report."""

    inputs: list[Path] = Field(
        ...,
        min_length=1,
        description="Data files or folders (JSONL, JSON, CSV, Parquet, saved datasets, docs).",
    )
    out: Path = Field(..., description="Output folder for the splits, report and manifest.")
    format: DataFormat | None = Field(None, description="Example form; detected from the columns when unset.")
    column_map: dict[str, str] = Field(
        default_factory=dict,
        description="Columns to read under the names the form expects: FIELD=COLUMN, e.g. instruction=question "
        "(in YAML a mapping, instruction: question).",
    )
    instruction: str | None = Field(
        None, description="Instruction for classification rows (text/label); a built-in default when unset."
    )
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="Invalid rows stop the run (fail) or are skipped and listed in the report (skip)."
    )
    fix_unicode: bool = Field(True, description="Repair mojibake and broken escapes (ftfy).")
    strip_html: bool = Field(True, description="Remove HTML tags (scripts and styles with their content).")
    normalize_whitespace: bool = Field(True, description="Trim lines, collapse space runs and blank lines.")
    boilerplate_share: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Remove lines (20+ chars) repeated in at least this share of rows; 0: off.",
    )
    model: str = Field(
        DEFAULT_MODEL, description="Target model: its tokenizer and chat template count tokens."
    )
    min_tokens: int = Field(0, ge=0, description="Drop examples with fewer rendered tokens.")
    max_tokens: int | None = Field(
        None, gt=0, description="Drop examples with more rendered tokens; default the model's context length."
    )
    dedup: bool = Field(True, description="Drop exact duplicates (after case and whitespace normalisation).")
    near_dup_threshold: float | None = Field(
        0.8,
        gt=0,
        le=1,
        description="Jaccard similarity (MinHash) above which rows are near-duplicates; None: off.",
    )
    pii: Literal["report", "redact", "drop"] = Field(
        "redact",
        description="Personal data: only count it, replace it with [EMAIL]-style tags, or drop the row.",
    )
    split: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15),
        description="Train/val/test shares, normalised to sum to 1: 70/15/15 by default, 80/10 for no test split "
        "(in YAML a list, [0.7, 0.15, 0.15]).",
    )
    seed: int = Field(42, description="Seed for the split.")
    group_by: str | None = Field(
        None, description="Column whose rows stay in one split (e.g. conversation_id)."
    )
    stratify: bool = Field(True, description="Keep label proportions equal across splits (classification).")
    leakage_threshold: float = Field(
        0.8, gt=0, le=1, description="Prompt similarity above which a val/test row leaks from another split."
    )
    epochs: float = Field(3.0, gt=0, description="Epochs assumed by the cost estimate.")
    method: Literal["lora", "full"] = Field(
        "lora", description="Training method assumed by the cost estimate."
    )
    calibrate: bool = Field(
        True, description="Measure CPU training speed (a few steps) when the registry has no earlier run."
    )
    gpu_prices: Path | None = Field(None, description="YAML table of GPU prices; default the built-in one.")


class ConfigFile(_Spec):
    """A tunesmith YAML file: one section per job kind."""

    train: dict[str, Any] | None = Field(None, description="TrainSpec fields.")
    eval: dict[str, Any] | None = Field(None, description="EvalSpec fields.")
    data: dict[str, Any] | None = Field(None, description="PrepareSpec fields (`tunesmith data prepare`).")
    serve: dict[str, Any] | None = Field(None, description="ServeSpec fields.")
    bias_audit: dict[str, Any] | None = Field(
        None, description="BiasAuditSpec fields (`tunesmith audit bias`)."
    )


class ConfigError(ValueError):
    """A config file or flag the user gave is invalid; the message names the key."""


def load_config_file(path: Path) -> ConfigFile:
    """Read a YAML config file, failing with the file name and offending key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read config: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with sections like 'train:', got {type(raw).__name__}")
    try:
        return ConfigFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=str(path))) from error


# The file section each spec is read from; config errors name their keys under it (`train.lora.r`).
SECTIONS: dict[type[BaseModel], str] = {
    TrainSpec: "train",
    EvalSpec: "eval",
    PrepareSpec: "data",
    ServeSpec: "serve",
    BiasAuditSpec: "bias_audit",
}


def build_spec(spec_class: type[SpecT], file_section: dict[str, Any] | None, flags: dict[str, Any]) -> SpecT:
    """Merge a config file's section with flags into a spec; errors name the key the user typed.

    Args:
        spec_class: TrainSpec, EvalSpec, PrepareSpec or ServeSpec.
        file_section: the file's section for that spec (`train:` ...), or None without a file.
        flags: dotted keys (`lora.r`, `judge.model`) to values; None means "not given" and leaves the file's
            value. A flag overrides the file's value, but a mapping (`adapters`, `column_map`) adds its
            keys to the file's.
    """
    merged = copy.deepcopy(file_section or {})
    for key, value in flags.items():
        if value is None:
            continue
        *parents, name = key.split(".")
        section = merged
        for parent in parents:
            section[parent] = dict(section.get(parent) or {})
            section = section[parent]
        old = section.get(name)
        section[name] = {**old, **value} if isinstance(value, dict) and isinstance(old, dict) else value
    try:
        return spec_class.model_validate(merged)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=SECTIONS[spec_class])) from error


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted key, e.g. `train.lora.r: must be > 0`."""
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        where = f"{source}.{key}" if key else source
        lines.append(f"{where}: {item['msg']}")
    return "\n".join(lines)
