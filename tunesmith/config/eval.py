"""The evaluation job and the bias audit: `EvalSpec`, its judge, and `BiasAuditSpec`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tunesmith.config.base import (
    DataFormat,
    _Spec,
)


class EvalTask(StrEnum):
    """What is being evaluated; decides how predictions are made and which metrics apply."""

    classification = "classification"  # label scored by log-likelihood; accuracy, macro P/R/F1
    generation = "generation"  # free text; ROUGE-1/2/L, BLEU, chrF, exact match (+ METEOR, CIDEr)
    qa = "qa"  # short answers; normalised exact match and token F1
    numeric = "numeric"  # the number after `####` (else the last number) must match


class JudgeModelSpec(_Spec):
    """Which model judges: a local model or any OpenAI-compatible endpoint (the evaluation's judge and the
    monitor's share these keys)."""

    model: str = Field(
        ...,
        description="Judge model, which turns the judge on: a local model (catalog name, directory) or the "
        "endpoint's model id.",
    )
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint (e.g. http://localhost:8000/v1); unset: run `model` locally.",
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the endpoint's key.")


class JudgeSpec(JudgeModelSpec):
    """An LLM judge: a local model or any OpenAI-compatible endpoint scores the answers."""

    criteria: dict[str, str] = Field(
        default_factory=lambda: {
            "accuracy": "Is the answer factually correct and consistent with the reference answer?",
            "helpfulness": "Does the answer address what the user asked, completely and clearly?",
        },
        description="Rubric: criterion name -> what a 5 means; each answer gets 1-5 per criterion.",
    )
    pairwise: bool = Field(True, description="Also ask which of two models' answers is better (both orders).")
    limit: int | None = Field(None, gt=0, description="Judge only the first N examples (judging is slow).")


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
    out_of_scope_objective: Literal["balanced", "accuracy"] = Field(
        "balanced",
        description="With out_of_scope_label: what the threshold maximises on the calibration examples. "
        "balanced: the mean of in-scope accuracy and out-of-scope recall (neither side's share of the data "
        "decides); accuracy: accuracy over all of them with out of scope as one more label (Larson et al., "
        "2019), which favours in-scope accuracy when out-of-scope examples are few.",
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
        if "out_of_scope_objective" in self.model_fields_set and self.out_of_scope_label is None:
            raise ValueError(
                "out_of_scope_objective chooses the out-of-scope threshold; set out_of_scope_label"
            )
        return self


GateMeasure = Literal["label_flip", "refusal_flip", "sentiment_flip"]


def default_gate_measures() -> list[GateMeasure]:
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
        default_factory=default_gate_measures,
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
