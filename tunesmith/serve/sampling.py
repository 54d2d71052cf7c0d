"""Next-token choice per row: greedy at temperature 0, else temperature and nucleus (top-p) sampling.

Owns: pure tensor functions over the last position's logits. Does not own: the decode loop.
"""

from __future__ import annotations

import torch


def sample_next(
    logits: torch.Tensor,
    temperatures: list[float],
    top_ps: list[float],
    generators: list[torch.Generator | None],
) -> list[int]:
    """One token id per row of `logits` (B, V), each row with its own settings and random generator."""
    greedy = logits.argmax(dim=-1).tolist()  # one device sync for every greedy row
    tokens = []
    for index, (row, temperature, top_p, generator) in enumerate(
        zip(logits, temperatures, top_ps, generators, strict=True)
    ):
        if temperature == 0:
            tokens.append(int(greedy[index]))
            continue
        probs = torch.softmax(row.float() / temperature, dim=-1)  # (V,)
        if top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # keep the smallest prefix whose mass reaches top_p (always at least the top token)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    return tokens
