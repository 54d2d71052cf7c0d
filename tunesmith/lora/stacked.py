"""Many LoRA adapters on one base model, each batch row through its own, in one forward (Punica, S-LoRA).

Owns: reading a saved peft LoRA adapter into per-layer matrices with its scaling folded in
(`read_lora`); `StackedLoRALinear`, a base linear layer plus every loaded adapter's matrices stacked
by slot (the serving row of the table in `tunesmith.lora`); `Routing`, the map from batch rows to
slots that one forward uses (`route`). Does not own: which adapter holds which slot, verification or
the LRU bound (`tunesmith.serve.adapters`), batching (`tunesmith.serve.engine`).

Layout: for a layer `in -> out`, `a` is (S, in, R) and `b` is (S, R, out): S slots, R the largest rank
loaded, the adapter's `lora_A.weight` and `lora_B.weight * scaling` transposed so that every matmul reads
them in place. A smaller rank is zero-padded to R and a layer an adapter does not target is zero in its
slot; both add exact zeros. Inference only. In fp32 the delta is added in place to the base layer's
output and rows on the bare base are left out of it: their output is the base layer's, bit for bit. In
bf16 (GPUs) the delta joins the base matmul's sum before it is rounded (`tunesmith.lora.rounding`:
rounding the base output first loses deltas under half a bf16 step); a base row adds zero there.

The delta, by batch shape (each choice the fastest of those timed; the timings are in
benchmarks/RESULTS.md, "LoRA layers"):
- every row on one adapter: `x @ a[s] @ b[s]`, as peft;
- decode, one token a row: rows grouped by slot into a padded (slots, m, in) block, two `bmm` over the
  stack's slot range (a view, no weight copied), the result added back with `index_add_` (a per-row
  gather of `a` and `b` copies r*(in+out) weights a row; a one-hot mask over all slots' columns and a
  loop over the slots were slower too);
- prefill, T tokens a row: each row gathers its slot's `a` and `b` and one `bmm` runs its T tokens; the
  copy is small beside T tokens of compute (the padded block and the loop were slower).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from tunesmith.lora.rounding import ROUNDED_DTYPES, linear_with_delta


@dataclass(frozen=True)
class Routing:
    """Which slot each row of a batch uses, as index tensors every layer of one forward shares."""

    rows: torch.Tensor  # (N,) the batch rows on an adapter, grouped by slot
    slots: torch.Tensor  # (N,) their slots
    single: int | None  # the slot, when every row of the batch is on that one adapter
    first: int  # the lowest and highest slot in use
    last: int
    width: int  # m: the most rows on one slot
    # (P*m,): slot first + p has its rows at [p*m, p*m + count); the padding repeats a row (result unused)
    block_rows: torch.Tensor
    block_at: torch.Tensor  # (N,) where each of `rows` sits in the block


def route(slots: list[int | None], device: torch.device) -> Routing | None:
    """The routing of a batch whose row i uses slot `slots[i]` (None: the bare base); None if no row has one."""
    on_adapter = sorted((slot, row) for row, slot in enumerate(slots) if slot is not None)
    if not on_adapter:
        return None
    counts = Counter(slot for slot, _ in on_adapter)
    first, last, width = min(counts), max(counts), max(counts.values())
    block_rows = [on_adapter[0][1]] * ((last - first + 1) * width)
    block_at = []
    placed: Counter[int] = Counter()
    for slot, row in on_adapter:
        at = (slot - first) * width + placed[slot]
        placed[slot] += 1
        block_rows[at] = row
        block_at.append(at)
    single = first if len(counts) == 1 and len(on_adapter) == len(slots) else None

    def tensor(values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long).to(device)

    return Routing(
        rows=tensor([row for _, row in on_adapter]), slots=tensor([slot for slot, _ in on_adapter]),
        single=single, first=first, last=last, width=width, block_rows=tensor(block_rows), block_at=tensor(block_at),
    )  # fmt: skip


class Router:
    """The routing of the forward in progress, shared by every `StackedLoRALinear` of one model.

    Set around a forward by the adapter cache (worker thread only): layers deep in a transformers model
    take no extra arguments, so they read it here, as peft's mixed batch reads its per-call hooks.
    """

    def __init__(self) -> None:
        self.current: Routing | None = None


class StackedLoRALinear(torch.nn.Module):
    """A base linear layer plus the low-rank delta of each row's adapter slot."""

    def __init__(self, base: torch.nn.Linear, slots: int, rank: int, router: Router) -> None:
        super().__init__()
        self.base = base
        self.router = router
        weight = base.weight
        self.register_buffer("a", weight.new_zeros(slots, base.in_features, rank), persistent=False)
        self.register_buffer("b", weight.new_zeros(slots, rank, base.out_features), persistent=False)
        self.a: torch.Tensor
        self.b: torch.Tensor

    def resize(self, slots: int, rank: int) -> None:
        """Grow to `slots` slots of rank `rank`, keeping the weights (the new room is zero)."""
        a = self.a.new_zeros(slots, self.a.shape[1], rank)
        b = self.b.new_zeros(slots, rank, self.b.shape[2])
        a[: self.a.shape[0], :, : self.a.shape[2]] = self.a
        b[: self.b.shape[0], : self.b.shape[1]] = self.b
        self.a, self.b = a, b

    def put(self, slot: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """Write an adapter's `a` (r, in) and scaled `b` (out, r) into a zero slot."""
        rank = a.shape[0]
        self.a[slot, :, :rank] = a.T
        self.b[slot, :rank] = b.T

    def clear(self, slot: int) -> None:
        self.a[slot].zero_()
        self.b[slot].zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, in)
        routing = self.router.current
        if routing is None:
            return self.base(x)  # type: ignore[no-any-return]
        rows, delta = self._delta(x, routing)  # rows None: every row
        if x.dtype in ROUNDED_DTYPES:  # bf16/fp16: the delta joins the sum before it is rounded
            if rows is not None:
                delta = x.new_zeros(*x.shape[:-1], delta.shape[-1]).index_add_(0, rows, delta)
            return linear_with_delta(x, self.base, delta)
        y: torch.Tensor = self.base(x)  # (B, T, out)
        return y.add_(delta) if rows is None else y.index_add_(0, rows, delta)

    def _delta(self, x: torch.Tensor, routing: Routing) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The rows on an adapter (None: all of them) and their low-rank deltas."""
        if routing.single is not None:
            return None, (x @ self.a[routing.single]) @ self.b[routing.single]
        if x.shape[1] == 1:  # decode: one padded block per slot, the stacks read in place
            first, last, width = routing.first, routing.last, routing.width
            block = x.index_select(0, routing.block_rows).view(last - first + 1, width, -1)  # (P, m, in)
            block = torch.bmm(
                torch.bmm(block, self.a[first : last + 1]), self.b[first : last + 1]
            )  # (P, m, out)
            return routing.rows, block.view(-1, 1, self.b.shape[2]).index_select(0, routing.block_at)
        a = self.a.index_select(0, routing.slots)  # (N, in, R): prefill, each row its own copy
        b = self.b.index_select(0, routing.slots)  # (N, R, out)
        return routing.rows, torch.bmm(torch.bmm(x.index_select(0, routing.rows), a), b)


def lora_scaling(config: dict[str, Any], rank: int) -> float:
    """peft's scaling of a LoRA delta: alpha / r, or alpha / sqrt(r) for rank-stabilised LoRA."""
    alpha = float(config["lora_alpha"])
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def read_lora(adapter_dir: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """`{module name: (a (r, in), b * scaling (out, r))}` of a saved peft LoRA adapter (verified first).

    Args:
        adapter_dir: A folder `verify_adapter` accepted: every tensor is a `lora_A` or `lora_B` weight.
    """
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key, a in tensors.items():
        if key.endswith(".lora_A.weight"):
            module_name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            layers[module_name] = (a, b.float() * lora_scaling(config, a.shape[0]))
    return layers
