from __future__ import annotations

import torch

from tunesmith.serve.sampling import SamplingError, sample_next


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


def test_a_tiny_temperature_is_greedy_and_a_broken_row_fails_alone() -> None:
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0)) * 5
    logits[2, 7] = float("nan")
    tokens = sample_next(logits, [1e-38, 1e-320, 1.0], [1.0, 0.9, 1.0], [None, None, None])
    assert tokens[:2] == logits[:2].argmax(dim=-1).tolist()  # before: "probability tensor contains nan"
    assert isinstance(tokens[2], SamplingError)
