"""Attention over packed rows that computes only the blocks each example needs.

Owns: the `tunesmith_packed` attention implementation, registered with transformers. Given the
sequence boundaries of a packed batch (`cu_seq_lens_q`, the flash-attention varlen convention, from
`packed_attention_kwargs`), it runs causal scaled-dot-product attention on each example's own span.
transformers' default for packed position ids is one SDPA call over the whole row with a
block-diagonal mask: on CPU that computes every (row × row) block and masks most of them away (a row
of four 256-token examples does 8× the causal work), which made attention a large share of a training
step (benchmarks/RESULTS.md).
Without boundaries (generation, padded batches with an attention mask) it is exactly transformers' SDPA.
Examples of up to `EXPLICIT_MAX_LEN` tokens take explicit attention (two batched matmuls and a softmax,
query heads grouped by their shared key/value head): on a CPU they run forward + backward faster than
the fused SDPA kernel, whose backward is slow at short lengths (benchmarks/RESULTS.md). It keeps one
`(heads, L, L)` probability matrix per example for backward (`tunesmith.train.plan.attention_span`
sizes it for the memory plan); longer examples use SDPA.
With `tunesmith_shared_prefix` = P (`tunesmith.data.pack.share_prefix`), the first span is a prefix
that every example begins with, present once: it attends causally to itself, and each later span
attends to all of it and causally to its own tokens, which is what each example computed alone.
Does not own: packing (`tunesmith.data.pack`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from tunesmith.data.pack import SharedPrefixRow

PACKED_ATTENTION = "tunesmith_packed"
EXPLICIT_MAX_LEN = 512  # longest example given explicit attention, faster than SDPA up to here


@lru_cache(maxsize=16)
def _causal_bias(
    length: int, group: int, dtype: torch.dtype, device: torch.device, prefix: int = 0
) -> torch.Tensor:
    """`(group·L, P+L)`: 0 on and below each diagonal (offset by `prefix`), -inf above, `group` times stacked."""
    causal = torch.full((length, prefix + length), float("-inf"), dtype=dtype, device=device)
    return causal.triu_(prefix + 1).repeat(group, 1)


def _explicit_causal_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, prefix: int = 0
) -> torch.Tensor:
    """Causal attention of one example, `(1, Hq, L, D)` with `(1, Hkv, P+L, D)` keys/values.

    The first `prefix` keys (a shared prefix) are visible to every query; the rest causally.
    """
    _, Hq, L, D = query.shape
    Hkv = key.shape[1]
    group = Hq // Hkv  # query head h reads key/value head h // group, as transformers' repeat_kv
    device = query.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else query.dtype
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)  # rotary may leave q/k in fp32
    with torch.autocast(device_type=device, enabled=False):
        bias = _causal_bias(L, group, dtype, query.device, prefix).expand(Hkv, group * L, prefix + L)
        # scale · q·kᵀ + causal bias in one call; the group's query heads share one key/value head
        scores = torch.baddbmm(bias, query.reshape(Hkv, group * L, D), key[0].transpose(1, 2), alpha=scale)
        probabilities = torch.softmax(scores, dim=-1)  # fp32 inside, stored in the input dtype
        output = probabilities @ value[0]
    return output.view(1, Hq, L, D)


def _example_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, prefix: int = 0
) -> torch.Tensor:
    length = query.shape[2]
    if length <= EXPLICIT_MAX_LEN and query.shape[1] % key.shape[1] == 0:
        return _explicit_causal_attention(query, key, value, scale, prefix)
    gqa = query.shape[1] != key.shape[1]
    if not prefix:
        return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, enable_gqa=gqa)
    # is_causal aligns the diagonal top-left; with a prefix it must end bottom-right: an explicit mask.
    visible = torch.ones(length, prefix + length, dtype=torch.bool, device=query.device).tril_(prefix)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=visible, scale=scale, enable_gqa=gqa)


def packed_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,  # (B, Hq, T, D)
    key: torch.Tensor,  # (B, Hkv, T, D)
    value: torch.Tensor,  # (B, Hkv, T, D)
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention per packed example when `cu_seq_lens_q` is given, else transformers' SDPA."""
    bounds = kwargs.get("cu_seq_lens_q")
    if bounds is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if dropout:
        raise ValueError("packed attention does not implement attention dropout")
    B, Hq, T, D = query.shape
    # Rows laid end to end: (1, H, B*T, D), so the boundaries index one flat token axis.
    flat_query = query.transpose(0, 1).reshape(1, Hq, B * T, D)
    flat_key = key.transpose(0, 1).reshape(1, key.shape[1], B * T, D)
    flat_value = value.transpose(0, 1).reshape(1, value.shape[1], B * T, D)
    scale = D**-0.5 if scaling is None else scaling
    # One split, not a slice per example: a slice's backward writes a zero tensor of the whole row
    # and adds it up per example; a split's backward is a single concatenation.
    lengths = [end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True)]
    spans = list(
        zip(
            flat_query.split(lengths, dim=2),
            flat_key.split(lengths, dim=2),
            flat_value.split(lengths, dim=2),
            strict=True,
        )
    )
    prefix = kwargs.get("tunesmith_shared_prefix", 0)
    if prefix:  # the first span is every example's opening, present once (see the module doc)
        _, prefix_key, prefix_value = spans[0]
        outputs = [_example_attention(*spans[0], scale)] + [
            _example_attention(
                q, torch.cat([prefix_key, k], 2), torch.cat([prefix_value, v], 2), scale, prefix
            )
            for q, k, v in spans[1:]
        ]
    else:
        outputs = [_example_attention(q, k, v, scale) for q, k, v in spans]
    output = torch.cat(outputs, dim=2).reshape(Hq, B, T, D).transpose(0, 1)  # (B, Hq, T, D)
    return output.transpose(1, 2), None  # (B, T, Hq, D), as transformers' attention functions return


def packed_attention_kwargs(position_ids: torch.Tensor) -> dict[str, Any]:
    """Sequence boundaries of a packed `(B, T)` batch whose position ids restart at 0 per example.

    The boundaries index the rows laid end to end (flash-attention's `cu_seqlens` convention) and
    are plain ints: every layer slices with them, and none of them may wait on a device.
    """
    flat = position_ids.reshape(-1).cpu()
    starts = torch.nonzero(flat == 0).flatten().tolist()
    return _bounds_kwargs([*starts, flat.numel()])


def shared_prefix_kwargs(row: SharedPrefixRow) -> dict[str, Any]:
    """The attention arguments of a `share_prefix` row: its spans, and the prefix length when shared."""
    return _bounds_kwargs(row.bounds) | ({"tunesmith_shared_prefix": row.prefix} if row.prefix else {})


def _bounds_kwargs(bounds: list[int]) -> dict[str, Any]:
    longest = max(end - start for start, end in zip(bounds[:-1], bounds[1:], strict=True))
    return {
        "cu_seq_lens_q": bounds,
        "cu_seq_lens_k": bounds,
        "max_length_q": longest,
        "max_length_k": longest,
    }


def use_packed_attention(model: PreTrainedModel) -> None:
    """Switch `model` (or a peft model's base) to packed attention; SDPA everywhere boundaries are absent."""
    AttentionInterface.register(PACKED_ATTENTION, packed_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_ATTENTION, sdpa_mask)  # generation builds SDPA's masks
    model.set_attn_implementation(PACKED_ATTENTION)
