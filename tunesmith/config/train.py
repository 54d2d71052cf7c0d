"""The training job: `TrainSpec` and its LoRA settings (`tunesmith train`, a project's `train:`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from tunesmith.config.base import (
    DEFAULT_MODEL,
    DataFormat,
    Duration,
    Precision,
    Switch,
    _Spec,
)

SMALL_MODEL_PARAMETERS = 1_000_000_000  # below this, LoRA SFT's default learning rate is 1e-3 (`resolved_lr`)


class LoraSpec(_Spec):
    """Low-rank adapter settings."""

    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Module names to adapt, or 'all-linear' for every linear layer but the head.",
    )


class DistributedSpec(_Spec):
    """How `tunesmith train --nproc N` splits one job across processes and machines (torchrun)."""

    strategy: Literal["auto", "ddp", "fsdp", "deepspeed"] = Field(
        "auto",
        description="auto: ddp for LoRA and QLoRA, fsdp for full fine-tuning. ddp: every process holds the "
        "whole model and trains on its share of each step's examples, gradients summed across processes. "
        "fsdp: full fine-tuning with the weights, gradients and optimizer state sharded across processes "
        "(FSDP2, torch's fully_shard), for a model that does not fit one device. deepspeed: ZeRO-3 sharding "
        "through DeepSpeed, which tunesmith does not install or run (an error says so).",
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="Communication backend. auto: nccl on CUDA, gloo on CPU."
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
        "The older values lora, qlora and full still mean sft with that tuning.",
    )
    tuning: Literal["lora", "qlora", "full"] = Field(
        "lora",
        description="lora: train a LoRA adapter; qlora: the same adapter on a 4-bit NF4 base (a CUDA GPU and "
        "bitsandbytes; a quarter of the base's memory); full: train every weight (sft only).",
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
        description="Peak learning rate; default for LoRA SFT 1e-3 on models below 1B parameters and 2e-4 "
        "from 1B up (measured: benchmarks/RESULTS.md, Defaults), 5e-5 for dpo, kto and orpo, 2e-5 for full.",
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
        3,
        gt=0,
        description="Stop after this many validations without improvement (None: never), once the first "
        "epoch is done: before that every step is unseen data.",
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
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec,
        description="How `tunesmith train --nproc N` splits the job; ignored in one process.",
    )
    name: str | None = Field(None, description="Adapter name in the registry; defaults to the run id.")
    out: Path | None = Field(None, description="Run directory; default TUNESMITH_HOME/runs/<run id>.")

    @model_validator(mode="before")
    @classmethod
    def _older_method_names_tuning(cls, data: Any) -> Any:
        """`method: lora|qlora|full` (the older spelling) is SFT with that tuning."""
        if not isinstance(data, dict) or data.get("method") not in ("lora", "qlora", "full"):
            return data
        if data.get("tuning", data["method"]) != data["method"]:
            raise ValueError(
                f"method {data['method']!r} contradicts tuning {data['tuning']!r}; set tuning only"
            )
        return {**data, "method": "sft", "tuning": data["method"]}

    @model_validator(mode="after")
    def _preference_trains_an_adapter(self) -> TrainSpec:
        if self.method != "sft" and self.tuning == "full":
            raise ValueError(
                f"method {self.method} trains a LoRA adapter (its reference is the model without it); "
                "set tuning: lora (or qlora)"
            )
        if self.init_adapter is not None and self.tuning == "full":
            raise ValueError("init_adapter continues a LoRA adapter; set tuning: lora")
        if self.method != "sft" and self.eval_metrics:
            raise ValueError(f"eval_metrics score generations during sft; method {self.method} logs its own")
        return self

    @model_validator(mode="after")
    def _strategy_fits_the_job(self) -> TrainSpec:
        if self.distributed.strategy == "fsdp" and self.tuning != "full":
            raise ValueError(
                f"distributed.strategy fsdp shards full fine-tuning; tuning {self.tuning} trains a small "
                "adapter over a frozen base: use strategy ddp (or auto)"
            )
        if self.distributed.strategy == "fsdp" and self.eval_metrics:
            raise ValueError(
                "distributed.strategy fsdp: eval_metrics generate in process 0 alone, which holds only its "
                "shard of the weights; drop eval_metrics (validation loss still runs) or score the saved model "
                "with `tunesmith eval`"
            )
        if self.distributed.strategy == "fsdp" and self.compile:
            raise ValueError("distributed.strategy fsdp runs without compile; set compile: false")
        return self

    @model_validator(mode="after")
    def _select_by_is_measured(self) -> TrainSpec:
        if self.select_by != "val_loss" and self.select_by not in (self.eval_metrics or []):
            raise ValueError(f"select_by {self.select_by!r} must be val_loss or one of eval_metrics")
        return self

    def resolved_lr(self, parameters: int | None = None) -> float:
        """The learning rate this job uses; `parameters`, the base model's size, sets LoRA SFT's default.

        LoRA SFT: 1e-3 below 1B parameters, measured on the embedded 135M model (CLINC150, the
        templates, federated rounds: benchmarks/RESULTS.md, "Defaults"); 2e-4, the field's usual LoRA
        rate (QLoRA, Unsloth), from 1B up or when the size is unknown, since smaller models take larger
        rates and nothing larger was measured here.
        """
        if self.lr is not None:
            return self.lr
        if self.tuning == "full":
            return 2e-5
        if self.method != "sft":
            return 5e-5
        return 1e-3 if parameters is not None and parameters < SMALL_MODEL_PARAMETERS else 2e-4
