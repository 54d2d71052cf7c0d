"""Next-token choice per row: greedy at temperature 0, else temperature and nucleus (top-p) sampling.

Owns: pure tensor functions over the last position's logits. A row whose distribution cannot be
sampled (non-finite logits) gets a `SamplingError` in its place, so one row never fails the others.
Does not own: the decode loop.
"""

from __future__ import annotations

import torch


class SamplingError(RuntimeError):
    """This row's next-token distribution cannot be sampled (its logits are not finite)."""


def sample_next(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ps: list[float],
    generators: list[torch.Generator | None],
) -> list[int | SamplingError]:
    """One token id per row of `logits` (B, V), each row with its own settings and random generator."""
    greedy = logits.argmax(dim=-1).tolist()  # one device sync for every greedy row
    finite = torch.isfinite(logits).all(dim=-1).tolist()
    tokens: list[int | SamplingError] = []
    for index, (row, temperature, top_p, generator) in enumerate(
        zip(logits, temperatures, top_ps, generators, strict=True)
    ):
        if not finite[index]:
            tokens.append(SamplingError("the model produced non-finite logits for this row"))
        elif temperature == 0:
            tokens.append(int(greedy[index]))
        else:
            tokens.append(_sample_row(row, temperature, top_p, generator))
    return tokens


def _sample_row(
    row: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    # Shifting by the maximum first keeps a tiny temperature finite: the top logit becomes 0 and the
    # others -inf at worst, so the distribution degrades to greedy instead of 0/0 = NaN. In float64,
    # because a temperature like 1e-320 is 0 in float32.
    row = row.double()
    scaled = (row - row.max()) / temperature  # (V,)
    probs = torch.softmax(scaled, dim=-1)  # (V,)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest prefix whose mass reaches top_p (always at least the top token)
        outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs[outside] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))
