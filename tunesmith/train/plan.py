"""Before a step runs: will it fit, how should it run, and how fast will it go.

Owns: the memory estimate of a training step (weights, trainable state, saved activations, loss
buffers, allocator overhead), the choice of tokens per forward/backward pass and of gradient
checkpointing from that estimate and a memory budget, and the throughput behind the time estimate
(earlier runs' median, else a matmul probe). Does not own: reading data, running a step, how many steps
a job runs (`budget`), the dry run's report (`dry_run`), or the time and cost arithmetic
(`data.estimate.estimate_training`, shared with `data prepare`).

The activation constant is measured, not derived: `benchmarks/train_throughput.py` prints the estimate
beside the measured peak for every run, so a drift shows up there.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from tunesmith.config import Precision, TrainSpec
from tunesmith.data.estimate import Throughput, median_throughput
from tunesmith.data.pack import pack_rows
from tunesmith.models.attention import EXPLICIT_MAX_LEN
from tunesmith.models.loading import supports_fast_bf16
from tunesmith.train.quantized import quantized_weight_bytes
from tunesmith.train.records import StepPlan

# Values kept for backward per token and decoder layer, in units of (hidden + intermediate) values.
# Calibrated from SmolLM2-135M's measured activation memory, rounded up (benchmarks/RESULTS.md).
# Checkpointing keeps one hidden vector per layer instead.
ACTIVATION_VALUES = 13.0
# The same for LoRA training's fused layers (tunesmith.lora.fused: no fp32 copies, no saved
# masks, the MLP keeps gate and up only): less is kept, and the constant also covers backward's
# temporaries; calibrated against measured peaks on a CPU, and it holds on CUDA (benchmarks/RESULTS.md).
FUSED_ACTIVATION_VALUES = 7.0
# What the allocator holds beyond live tensors at the peak, as a factor: glibc's arenas on CPU
# (measured against mmap'd allocations, benchmarks/RESULTS.md), PyTorch's caching allocator on CUDA.
ALLOCATOR_OVERHEAD = {"cpu": 1.4, "cuda": 1.15}
# Most tokens per forward/backward pass. Each pass pays fixed costs (every weight read once per
# matmul, Python and dispatch per op, attention calls per example), so on a CPU one pass of a whole
# batch runs faster than two, while the matmuls themselves reach their peak well below this cap
# (benchmarks/RESULTS.md). On GPUs more tokens per pass keep the device busy.
MAX_PASS_TOKENS = {"cpu": 2048, "cuda": 65536}
LOSS_CHUNK = 1024  # positions per logits chunk in `linear_cross_entropy`
# Model FLOPs utilisation assumed when no earlier run of this model was measured on this machine.
ASSUMED_MFU = {"cpu": 0.35, "cuda": 0.30}
GB = 1e9


@dataclass(frozen=True)
class ModelShape:
    """The sizes a memory and FLOP estimate needs, read from a model config without loading weights."""

    parameters: int
    trainable: int
    layers: int
    heads: int
    hidden: int
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one training step, in bytes, by component."""

    weights: int
    trainable_state: int  # trainable weights' gradients and AdamW moments (and fp32 copies)
    activations: int
    loss_buffers: int
    overhead: int  # allocator slack beyond live tensors

    @property
    def total(self) -> int:
        return self.weights + self.trainable_state + self.activations + self.loss_buffers + self.overhead

    def to_gb(self) -> dict[str, float]:
        values = asdict(self) | {"total": self.total}
        return {name: round(value / GB, 2) for name, value in values.items()}


@dataclass(frozen=True)
class StepLayout:
    """How each optimizer step runs: packed rows split into passes of at most `pass_tokens` tokens."""

    pass_tokens: int
    gradient_checkpointing: bool
    memory: MemoryEstimate
    budget: int  # bytes the run may use
    fits: bool
    notes: list[str] = field(default_factory=list)
    fused_layers: bool = False  # tunesmith's fused LoRA/MLP/norm functions (see `fused_layer_choices`)


def model_shape(model_path: str, method: str, lora_rank: int, targets: list[str] | str) -> ModelShape:
    """Parameter counts (total and trainable) and layer sizes of `model_path`, built on the meta device."""
    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    parameters = sum(parameter.numel() for parameter in model.parameters())
    if method == "full":
        trainable = parameters
    else:
        head = model.get_output_embeddings()
        trainable = sum(
            lora_rank * (module.in_features + module.out_features)
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear)
            and module is not head
            and (targets == "all-linear" or name.rsplit(".", 1)[-1] in targets)
        )
    text_config = config.get_text_config()
    return ModelShape(
        parameters=parameters,
        trainable=trainable,
        layers=text_config.num_hidden_layers,
        heads=text_config.num_attention_heads,
        hidden=text_config.hidden_size,
        intermediate=text_config.intermediate_size,
        vocab=text_config.vocab_size,
    )


def estimate_memory(
    shape: ModelShape,
    method: str,
    bf16: bool,
    pass_tokens: int,
    gradient_checkpointing: bool,
    device: str,
    attention_span: float = 0.0,
    fused_layers: bool = False,
) -> MemoryEstimate:
    """Peak bytes of a step that runs `pass_tokens` tokens per forward/backward pass.

    `attention_span`: attention probabilities kept per token, head and layer, from `attention_span(lengths)`
    where packed attention runs; 0 where attention keeps none. `fused_layers`: see `fused_layer_choices`.
    """
    compute_bytes = 2 if bf16 else 4
    if method == "lora":
        weights = shape.parameters * (2 if bf16 else 4)  # the frozen base lives in bf16 under bf16
        trainable_state = shape.trainable * 16  # fp32 weight, gradient, two AdamW moments
    elif method == "qlora":  # the frozen base in 4-bit NF4
        weights = quantized_weight_bytes(shape.parameters, shape.vocab, shape.hidden)
        trainable_state = shape.trainable * 16
    else:
        weights = shape.parameters * 4  # fp32 master weights; bf16 runs under autocast
        trainable_state = shape.parameters * 12
    values = FUSED_ACTIVATION_VALUES if fused_layers and method == "lora" else ACTIVATION_VALUES
    per_layer = (values * (shape.hidden + shape.intermediate) + shape.heads * attention_span) * compute_bytes
    if gradient_checkpointing:  # every layer's input, plus one layer recomputed at a time
        activations = pass_tokens * (shape.layers * shape.hidden * compute_bytes + per_layer)
    else:
        activations = pass_tokens * shape.layers * per_layer
    loss_buffers = (
        min(pass_tokens, LOSS_CHUNK) * shape.vocab * compute_bytes * 2 + pass_tokens * shape.hidden * 4
    )
    live = weights + trainable_state + activations + loss_buffers
    overhead = int(live * (ALLOCATOR_OVERHEAD[_kind(device)] - 1))
    return MemoryEstimate(int(weights), int(trainable_state), int(activations), int(loss_buffers), overhead)


def memory_budget(device: str, limit_gb: float | None) -> int:
    """Bytes a run may use: the user's limit, else 90% of the GPU's free memory or half the free RAM."""
    if limit_gb is not None:
        return int(limit_gb * GB)
    if _kind(device) == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.9)
    import psutil

    return int(psutil.virtual_memory().available * 0.5)


def choose_step_layout(
    shape: ModelShape,
    method: str,
    bf16: bool,
    device: str,
    row_len: int,
    rows_per_batch: int,
    budget: int,
    checkpointing: Literal["auto", "on", "off"],
    pass_tokens: int | None = None,
    attention_span: float = 0.0,
    fused_layers: bool = False,
) -> StepLayout:
    """The largest pass (whole rows, at most one batch) that fits `budget`, checkpointing only if needed.

    Args:
        row_len: tokens per packed row; a pass holds whole rows, so at least one.
        rows_per_batch: rows one batch packs into (an upper bound on a useful pass).
        pass_tokens: the user's choice, used as given (the estimate still says whether it fits).
        attention_span: see `attention_span`.
        fused_layers: whether the step runs tunesmith's fused layers (less kept for backward).
    """
    notes: list[str] = []
    if pass_tokens is not None:
        chosen = max(pass_tokens, row_len)
        use_checkpointing = checkpointing == "on"
        memory = estimate_memory(
            shape, method, bf16, chosen, use_checkpointing, device, attention_span, fused_layers
        )
        return StepLayout(
            chosen, use_checkpointing, memory, budget, memory.total <= budget, notes, fused_layers
        )
    cap = min(row_len * rows_per_batch, max(MAX_PASS_TOKENS[_kind(device)], row_len))
    for use_checkpointing in [False, True] if checkpointing == "auto" else [checkpointing == "on"]:
        fitting = _largest_fitting_pass(
            shape, method, bf16, device, row_len, cap, budget, use_checkpointing, attention_span, fused_layers
        )
        if fitting is not None:
            memory = estimate_memory(
                shape, method, bf16, fitting, use_checkpointing, device, attention_span, fused_layers
            )
            if use_checkpointing and checkpointing == "auto":
                notes.append("gradient checkpointing on: one row's activations do not fit the memory budget")
            return StepLayout(fitting, use_checkpointing, memory, budget, True, notes, fused_layers)
    use_checkpointing = checkpointing != "off"
    memory = estimate_memory(
        shape, method, bf16, row_len, use_checkpointing, device, attention_span, fused_layers
    )
    notes.append("one row does not fit the memory budget even with gradient checkpointing")
    return StepLayout(row_len, use_checkpointing, memory, budget, False, notes, fused_layers)


def uses_bf16(precision: Precision, device: str) -> bool:
    """bf16 when asked for, or under `auto` where the hardware runs bf16 matmuls natively."""
    return precision == Precision.bf16 or (precision == Precision.auto and supports_fast_bf16(device))


def step_counts(num_examples: int, spec: TrainSpec) -> tuple[int, int]:
    """Optimizer steps per epoch and in the whole job (`max_steps` wins over `epochs`)."""
    steps_per_epoch = math.ceil(num_examples / (spec.batch_size * spec.grad_accum))
    return steps_per_epoch, spec.max_steps or math.ceil(spec.epochs * steps_per_epoch)


def uses_packed_attention(device: str, compile_model: bool) -> bool:
    """Per-example packed attention runs on CPU only (see `tunesmith.train.sft`) and not under compile."""
    return _kind(device) == "cpu" and not compile_model


def fused_layer_choices(
    device: str, compile_model: bool, fused_layers: str = "auto", lora_dropout: float = 0.0
) -> list[bool]:
    """Whether training may run LoRA layers, SwiGLU MLPs and frozen norms as fused functions, by preference.

    One value is the answer; `[False, True]` means peft's layers unless the fused ones' memory saving
    gives a better step layout (see `plan_step_layout`). Never under compile (a fresh mask seed per call
    would recompile). `auto` on CUDA with LoRA dropout is the two-way case: there the fused layers keep
    much less GPU memory but run slower than peft's; at dropout 0 they are both smaller and faster, so
    there they are always taken (benchmarks/RESULTS.md).
    """
    if fused_layers == "off" or compile_model:
        return [False]
    if fused_layers == "on" or _kind(device) == "cpu" or lora_dropout == 0:
        return [True]
    return [False, True]


def plan_step_layout(
    spec: TrainSpec, shape: ModelShape, bf16: bool, device: str, lengths: list[int]
) -> StepLayout:
    """`choose_step_layout` for `spec`'s examples of `lengths` on `device`: what training and a dry run use.

    Where fused layers are the second choice (`fused_layer_choices`), they are taken only if their layout
    is better: it fits where the other does not, needs no gradient checkpointing where the other does,
    or runs bigger passes.
    """
    row_len, rows = batch_geometry(lengths, spec.batch_size, spec.pack_len)
    budget = memory_budget(device, spec.memory_limit_gb)
    span = attention_span(lengths) if uses_packed_attention(device, spec.compile) else 0.0
    best: StepLayout | None = None
    # tunesmith's fused layers read a dense base weight: never on a 4-bit one (QLoRA).
    choices = fused_layer_choices(device, spec.compile, spec.fused_layers, spec.lora.dropout)
    for fused in choices if spec.tuning != "qlora" else [False]:
        layout = choose_step_layout(
            shape, spec.tuning, bf16, device, row_len, rows, budget, spec.gradient_checkpointing,
            spec.micro_batch_tokens, span, fused,
        )  # fmt: skip
        if best is None:
            best = layout
        elif _layout_rank(layout) > _layout_rank(best):
            layout.notes.append("fused LoRA layers on: with peft's layers the step would " + _shortfall(best))
            best = layout
    assert best is not None
    return best


def _layout_rank(layout: StepLayout) -> tuple[bool, bool, int]:
    return layout.fits, not layout.gradient_checkpointing, layout.pass_tokens


def _shortfall(layout: StepLayout) -> str:
    if not layout.fits:
        return "not fit the memory budget"
    if layout.gradient_checkpointing:
        return "need gradient checkpointing"
    return f"run passes of {layout.pass_tokens:,} tokens"


def attention_span(lengths: list[int]) -> float:
    """Attention probabilities packed attention keeps per token, head and layer, over examples of `lengths`.

    Explicit attention keeps an `L x L` matrix per head for an example of `L` tokens (up to
    `EXPLICIT_MAX_LEN`), so L values per token: the token-weighted mean length of those examples.
    """
    return sum(n * n for n in lengths if n <= EXPLICIT_MAX_LEN) / max(1, sum(lengths))


def batch_geometry(lengths: list[int], batch_size: int, pack_len: int) -> tuple[int, int]:
    """Row length and the rows the heaviest batch packs into (its `batch_size` longest examples)."""
    row_len = max(pack_len, *lengths)
    heaviest = sorted(lengths)[-batch_size:]
    return row_len, len(pack_rows(heaviest, row_len))


def _largest_fitting_pass(
    shape: ModelShape,
    method: str,
    bf16: bool,
    device: str,
    row_len: int,
    cap: int,
    budget: int,
    checkpointing: bool,
    attention_span: float,
    fused_layers: bool,
) -> int | None:
    rows = cap // row_len
    while rows >= 1:
        memory = estimate_memory(
            shape, method, bf16, rows * row_len, checkpointing, device, attention_span, fused_layers
        )
        if memory.total <= budget:
            return rows * row_len
        rows -= 1
    return None


def estimate_throughput(
    shape: ModelShape, method: str, bf16: bool, device: str, measured: list[float]
) -> Throughput:
    """Tokens per second: the median of earlier runs of this model here, else a matmul probe x typical MFU."""
    earlier = median_throughput(measured)
    if earlier is not None:
        return earlier
    flops_per_token = (4 if method == "lora" else 6) * shape.parameters
    peak = measure_matmul_peak(device, torch.bfloat16 if bf16 else torch.float32)
    mfu = ASSUMED_MFU[_kind(device)]
    source = f"matmul probe {peak / 1e9:.0f} GFLOP/s x {mfu:.0%} utilisation (no earlier run measured)"
    return Throughput(peak * mfu / flops_per_token, source)


def measure_matmul_peak(device: str, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """FLOP/s of a square matmul on `device` in `dtype`, timed for about `seconds`."""
    size = 1024 if _kind(device) == "cpu" else 8192
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    _synchronize(device)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
        _synchronize(device)
    return 2 * size**3 * count / (time.perf_counter() - start)


def peak_memory_bytes(device: str) -> int:
    """Peak memory of this process so far: CUDA allocator peak on GPU, peak RSS on CPU."""
    if _kind(device) == "cuda":
        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


def step_plan(layout: StepLayout) -> StepPlan:
    """The record of `layout` that `plan.json`, events and the dry run carry."""
    return StepPlan(
        pass_tokens=layout.pass_tokens,
        gradient_checkpointing=layout.gradient_checkpointing,
        memory_gb=layout.memory.to_gb(),
        budget_gb=round(layout.budget / GB, 2),
        fits=layout.fits,
        fused_layers=layout.fused_layers,
        notes=layout.notes,
    )


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def _synchronize(device: str) -> None:
    if _kind(device) == "cuda":
        torch.cuda.synchronize()
