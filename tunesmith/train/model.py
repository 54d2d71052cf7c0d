"""The model as every training objective sees it: loaded, adapted, and run to final hidden states.

Owns: `prepare_training_model`, which loads the base model in the run's dtype, adds LoRA adapters (or
leaves every weight trainable), installs tunesmith's LoRA forwards, per-example attention, gradient
checkpointing and compile as the step plan says, in that order; and `TrainingModel.hidden_states`, a
forward of packed rows to the decoder's last hidden states under the run's autocast. Objectives take
the loss from those hidden states and the output embedding (`head_weight`): no `(tokens, vocab)` logits
are built here. Does not own: which forward a LoRA layer runs (`tunesmith.lora`), the loss, the loop.

On a CPU a pass runs its rows' tokens end to end with no padding, and the opening its examples share
(a system prompt) is computed once (`tunesmith.data.pack.share_prefix`), with attention per example
(`tunesmith.models.attention`). On CUDA, rows stay padded: its masked SDPA costs less than a launch per
example, and packed attention's plain-int boundaries would make a compiled graph recompile per batch.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tunesmith.data.pack import PackedBatch, share_prefix
from tunesmith.lora import use_lora_forwards
from tunesmith.models.adapters import add_lora, load_trainable_adapter
from tunesmith.models.attention import shared_prefix_kwargs, use_packed_attention
from tunesmith.models.loading import load_model
from tunesmith.train.quantized import load_quantized_model


@dataclass(frozen=True)
class LoraSettings:
    rank: int
    alpha: int
    dropout: float
    targets: list[str] | str


@dataclass(frozen=True)
class TrainingModel:
    """A model ready to train, and how to run packed rows through it."""

    model: Any  # the peft model (LoRA) or the transformers model (full): saved, checkpointed, evaluated
    decoder: nn.Module  # the transformer body (compiled, or sharded, when asked): hidden states, no logits
    device: str
    bf16: bool
    packed_attention: bool  # rows run end to end with per-example attention (CPU)

    @property
    def head_weight(self) -> torch.Tensor:
        """(V, H) the output embedding, looked up each time: sharded weights are swapped in and out."""
        weight: torch.Tensor = self.model.get_output_embeddings().weight
        return weight

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.bf16 else torch.float32

    def hidden_states(
        self, batch: PackedBatch, rows: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last hidden states `(B, T, H)` of `rows` of `batch`, and their targets `(B, T)`, on the device."""
        if self.packed_attention:  # attention stays within each example, so rows run end to end: no padding
            row = share_prefix(*batch.end_to_end(rows))  # the examples' common opening computed once
            input_ids, position_ids, targets = row.input_ids, row.position_ids, row.targets
            boundaries = shared_prefix_kwargs(row)
        else:
            columns = slice(0, batch.width(rows))  # a pass of short rows drops the padding other rows needed
            input_ids, position_ids = batch.input_ids[rows, columns], batch.position_ids[rows, columns]
            targets, boundaries = batch.targets[rows, columns], {}
        with self._autocast(), _attention_backends(self.device):
            hidden = self.decoder(
                input_ids=input_ids.to(self.device),
                position_ids=position_ids.to(self.device),
                use_cache=False,
                **boundaries,
            ).last_hidden_state
        return hidden, targets.to(self.device)

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device, dtype=torch.bfloat16) if self.bf16 else nullcontext()


def prepare_training_model(
    model_path: str,
    *,
    lora: LoraSettings | None,
    bf16: bool,
    device: str,
    fused_layers: bool,
    packed_attention: bool,
    gradient_checkpointing: bool,
    compile_decoder: bool,
    init_adapter: Path | None = None,
    quantized: bool = False,
) -> TrainingModel:
    """Load `model_path` for training: LoRA adapters when `lora` is given, else every weight trainable.

    With `init_adapter`, that saved adapter is trained further in place of fresh LoRA adapters. With
    `quantized` (QLoRA), the base loads in 4-bit NF4 on CUDA (`tunesmith.train.quantized`).
    """
    # LoRA: the frozen base can live in bf16 (half the memory, no per-step casts); adapters stay fp32.
    # Full fine-tuning keeps fp32 master weights and runs the matmuls under bf16 autocast.
    model: Any
    if quantized:  # already on its device, gradient checkpointing set up as planned
        model = load_quantized_model(model_path, gradient_checkpointing=gradient_checkpointing)
    else:
        model = load_model(model_path, dtype=torch.bfloat16 if bf16 and lora else torch.float32)
    if init_adapter is not None:
        model = load_trainable_adapter(model, init_adapter)
    elif lora is not None:
        model = add_lora(model, lora.rank, lora.alpha, lora.dropout, lora.targets)
    if init_adapter is not None or lora is not None:
        # Which forward each layer runs, in training and in validation: the table in tunesmith.lora.
        # CUDA's native dropout is already one fused kernel; a CPU's draws its mask slowly (benchmarks/RESULTS.md).
        use_lora_forwards(model, fused=fused_layers, fast_dropout=device == "cpu")
    if not quantized:
        model.to(device)
    if packed_attention:
        use_packed_attention(model)
    if gradient_checkpointing and not quantized:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    decoder = model.get_decoder()
    if compile_decoder:  # row count and width vary per batch: one dynamic graph, not a recompile per shape
        decoder = torch.compile(decoder, dynamic=True)
    return TrainingModel(
        model=model,
        decoder=decoder,
        device=device,
        bf16=bf16,
        packed_attention=packed_attention,
    )


def _attention_backends(device: str) -> AbstractContextManager[Any]:
    """On CUDA, SDPA's flash and memory-efficient kernels (then math), never cuDNN's.

    cuDNN's attention builds a plan for every new sequence shape, costing CPU time per backward call on
    steps bound by CPU time (see benchmarks/RESULTS.md), and a batch's width follows its longest
    example, so nearly every batch is a new shape.
    """
    if not device.startswith("cuda"):
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
