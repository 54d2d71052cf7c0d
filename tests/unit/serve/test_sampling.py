from __future__ import annotations

import torch

from tunesmith.serve.sampling import sample_next


def test_greedy_nucleus_and_seeded_sampling() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, 0.0, 0.0, 0.0]])
    assert sample_next(logits, [0.0, 0.0], [1.0, 1.0], [None, None]) == [1, 0]
    # top_p small enough keeps only the most likely token, whatever the temperature
    tiny_p = [sample_next(logits, [2.0, 2.0], [0.1, 0.1], [None, None]) for _ in range(50)]
    assert all(tokens == [1, 0] for tokens in tiny_p)

    def seeded() -> list[int]:
        generator = torch.Generator().manual_seed(7)
        return [sample_next(logits[:1], [1.0], [1.0], [generator])[0] for _ in range(30)]

    first = seeded()
    assert first == seeded() and len(set(first)) > 1  # reproducible, and actually sampling
