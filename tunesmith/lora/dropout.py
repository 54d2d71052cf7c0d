"""LoRA dropout whose random mask is cheap to draw on a CPU.

Owns: `keep_mask`, the mask itself; `FastDropout`, a drop-in for the `nn.Dropout` peft puts in front
of every LoRA `A` matrix; and `use_fast_dropout`, which swaps them in (called by
`tunesmith.lora.use_lora_forwards` with `fast_dropout=True`). Does not own: the layers that apply the
mask (peft's forward with `FastDropout`, or `tunesmith.lora.fused`, which redraws it in backward).

On a CPU, `torch.nn.functional.dropout` draws its mask with `bernoulli_`, one generator call per
element: with LoRA on all seven linear layers of SmolLM2-135M that was a sizeable share of a bf16
training step. Even 64-bit draws cut into lanes are slow, because the CPU generator (mt19937) runs on
one thread, and comparing and masking through a bool tensor is not vectorised.

`keep_mask` instead hashes a counter: SplitMix64 (the mixer of Java's `SplittableRandom`, which passes
BigCrush) over `seed + i·φ` for the i-th 64-bit word, one 64-bit seed per mask drawn from torch's
generator (so `torch.manual_seed` still fixes every mask, and a resumed run redraws the same ones).
Each word gives four 14-bit lanes, one per element; an element is dropped when its lane is below
`round(p · 2**14)`, so the drop rate is `p` to within 2**-15. The comparison and the conversion to
multipliers are done on whole words with borrow-free lane arithmetic. Eager, that is 13 integer passes
over a quarter of the elements, cheaper than the generator alone; on a CPU the chain is compiled into
one kernel (`tunesmith.lora.kernels`), cheaper again (figures: benchmarks/RESULTS.md, "LoRA layers").
Because a mask is a function of its seed, a fused layer (`tunesmith.lora.fused`) keeps only the seed
for backward and redraws it, instead of holding a mask per layer.

On CUDA the lanes come from torch's Philox generator seeded with the mask's seed instead (one launch,
then three for the comparison; inductor's Triton build of the hash failed there, and eager it is a
launch per op), so a CUDA mask differs from a CPU mask of the same seed; each is a function of its seed.
`FastDropout` itself is swapped in on CPUs only: CUDA's native dropout is already a fused kernel.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from tunesmith.lora.kernels import fused_cpu_kernel

LANES = 1 << 14  # one 14-bit lane per element, four per 64-bit word


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)  # SplitMix64's increment and mixing constants
_MIX = (_signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB))
_LANE_BIT14 = 0x4000400040004000  # bit 14 of every 16-bit lane; 0x4000 is 2.0 in bfloat16
_LANE_ONES = 0x0001000100010001


_SCRATCH: dict[tuple[str, torch.device], torch.Tensor] = {}


def new_seed() -> int:
    """A 64-bit mask seed from torch's CPU generator."""
    return int(torch.empty((), dtype=torch.int64).random_(-(2**63), 2**63 - 1))


def scratch(name: str, count: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A reusable flat buffer of `count` elements, valid until the next request for `name` on `device`.

    A fresh multi-megabyte tensor costs more to allocate and fault in than one pass over it, and
    these buffers are written and read once per layer, so they are kept per (name, device).
    """
    key = (name, device)
    nbytes = count * dtype.itemsize
    buffer = _SCRATCH.get(key)
    if buffer is None or buffer.numel() < nbytes:
        buffer = _SCRATCH[key] = torch.empty(nbytes, dtype=torch.uint8, device=device)
    return buffer[:nbytes].view(dtype)


def _probe_mask_words() -> tuple[torch.Tensor, int, int]:
    """Arguments of a `_mask_words` call that covers whole vector blocks and a tail, with a wrapping seed."""
    return torch.empty(4099, dtype=torch.int64), 2**63 - 12345, 819


@fused_cpu_kernel(probe=_probe_mask_words)
def _mask_words(out: torch.Tensor, seed: int, threshold: int, *, device: torch.device) -> torch.Tensor:
    """Fills `out` with 64-bit words of four 16-bit lanes: 0x4000 (bf16's 2.0) where a lane is kept, else 0."""
    words = torch.arange(out.numel(), dtype=torch.int64, device=device) * _GOLDEN + seed  # seed + i·φ
    for shift, multiplier in ((30, _MIX[0]), (27, _MIX[1]), (31, 1)):  # SplitMix64's finaliser
        words = words ^ ((words >> shift) & ((1 << (64 - shift)) - 1))  # a logical shift
        if multiplier != 1:
            words = words * multiplier  # int64 arithmetic wraps as uint64 would
    # Lane by lane, with no borrow between lanes: bit 14 of (bit 14 set | low 14 bits) - threshold
    # stays set exactly when the low 14 bits are >= threshold; kept alone it is bf16's 2.0.
    return out.copy_(((words | _LANE_BIT14) - threshold * _LANE_ONES) & _LANE_BIT14)


def _philox_mask_words(out: torch.Tensor, seed: int, threshold: int) -> torch.Tensor:
    """`_mask_words`'s lanes from a Philox generator seeded with `seed` (CUDA): 4 launches instead of 13."""
    generator = torch.Generator(device=out.device)
    generator.manual_seed(seed % 2**64)
    out.random_(generator=generator)  # 63 uniform bits per word: the lanes use bits 0-61
    return out.bitwise_or_(_LANE_BIT14).sub_(threshold * _LANE_ONES).bitwise_and_(_LANE_BIT14)


def keep_mask(
    shape: torch.Size | tuple[int, ...],
    threshold: int,
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
    reuse: bool = False,
) -> torch.Tensor:
    """Multipliers of `shape` in `dtype`: 0 where the element's 14-bit lane is below `threshold`, else 2.

    2, not 1: bf16's 2.0 (0x4000) is the lane's comparison bit itself, so no shift or multiply is
    needed to build it; callers fold the exact factor 1/2 into their scale. With `reuse`, the mask
    lives in a scratch buffer (see `scratch`) and is only valid until the next reusing call: a fresh
    multi-megabyte mask per layer cost ~350 MB of peak RSS in heap fragmentation.
    """
    count = math.prod(shape)
    words_count = (count + 3) // 4
    words = (
        scratch("mask", words_count, torch.int64, device)
        if reuse
        else torch.empty(words_count, dtype=torch.int64, device=device)
    )
    if device.type == "cuda":
        _philox_mask_words(words, seed, threshold)
    else:
        _mask_words(words, seed, threshold, device=device)
    keep = words.view(torch.bfloat16)[:count].view(shape)
    return keep if dtype == torch.bfloat16 else keep.to(dtype)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, inputs: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale / 2  # keep_mask's multipliers are 0 and 2
        return (inputs * keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return (grad_output * keep).mul_(ctx.scale), None, None


class FastDropout(nn.Module):
    """`nn.Dropout(p)` in training mode with the mask of `keep_mask`; kept values scaled by the exact 1/(1-rate)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * LANES)  # lanes below this are dropped
        self.scale = LANES / (LANES - self.threshold)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if not self.training or self.threshold == 0:
            return inputs
        keep = keep_mask(inputs.shape, self.threshold, new_seed(), inputs.dtype, inputs.device)
        output: torch.Tensor = _MaskedScale.apply(inputs, keep, self.scale)  # type: ignore[no-untyped-call]
        return output

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every LoRA dropout of `model` (peft's `lora_dropout` dicts) by `FastDropout`; returns how many."""
    replaced = 0
    for module in model.modules():
        dropouts = module._modules.get("lora_dropout")
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in dropouts.items():
            if isinstance(dropout, nn.Dropout):
                dropouts[name] = FastDropout(dropout.p)
                replaced += 1
    return replaced
