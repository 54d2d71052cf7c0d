"""The exact aggregation is the average of the clients' B·A; FedAvg's error is measured beside it."""

from __future__ import annotations

import numpy as np
import pytest

from tunesmith.federated.aggregate import aggregate, average_error, exact_average, example_weights, fedavg


def _clients(count: int, rank: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [
        {
            f"m.layers.{layer}.q_proj.lora_A.weight": rng.normal(size=(rank, 24)).astype(np.float32),
            f"m.layers.{layer}.q_proj.lora_B.weight": rng.normal(size=(16, rank)).astype(np.float32),
        }
        for _ in range(count)
        for layer in [0]
    ]


def _average_product(clients: list[dict[str, np.ndarray]], examples: list[int]) -> np.ndarray:
    weights = np.asarray(examples, dtype=np.float64) / sum(examples)
    key = "m.layers.0.q_proj.lora_"
    return sum(
        w * c[key + "B.weight"].astype(np.float64) @ c[key + "A.weight"]
        for c, w in zip(clients, weights, strict=True)
    )


def test_exact_at_clients_times_rank_matches_the_weighted_average_of_products() -> None:
    clients, examples = _clients(3, 4), [10, 30, 60]
    result = aggregate("exact", clients, examples, rank=12)
    key = "m.layers.0.q_proj.lora_"
    got = result.arrays[key + "B.weight"].astype(np.float64) @ result.arrays[key + "A.weight"]
    target = _average_product(clients, examples)
    assert np.abs(got - target).max() <= 1e-6 * max(1.0, np.abs(target).max())
    assert result.error < 1e-6
    assert result.fedavg_error > 0.3  # averaging A and B separately is far off for unrelated clients


def test_truncated_exact_is_the_best_rank_r_and_never_worse_than_fedavg() -> None:
    clients, examples = _clients(4, 4, seed=1), [5, 5, 5, 5]
    result = aggregate("exact", clients, examples, rank=4)
    weights = example_weights(examples)
    assert result.arrays["m.layers.0.q_proj.lora_A.weight"].shape == (4, 24)
    assert 0 < result.error <= result.fedavg_error
    assert result.error == pytest.approx(average_error(clients, weights, result.arrays), rel=1e-5)


def test_fedavg_averages_each_factor_by_examples() -> None:
    clients = _clients(2, 2, seed=2)
    result = aggregate("fedavg", clients, [1, 3], rank=2)
    key = "m.layers.0.q_proj.lora_A.weight"
    np.testing.assert_allclose(result.arrays[key], 0.25 * clients[0][key] + 0.75 * clients[1][key], rtol=1e-6)
    assert result.error == result.fedavg_error > 0


def test_identical_clients_aggregate_to_themselves_both_ways() -> None:
    client = _clients(1, 3, seed=3)[0]
    weights = example_weights([2, 7])
    exact, residual = exact_average([client, client], weights, rank=3)
    assert residual < 1e-6 and average_error([client, client], weights, exact) < 1e-6
    assert average_error([client, client], weights, fedavg([client, client], weights)) < 1e-6


def test_a_client_without_examples_is_refused() -> None:
    with pytest.raises(ValueError, match="positive example count"):
        example_weights([3, 0])


def _product(arrays: dict[str, np.ndarray]) -> np.ndarray:
    key = "m.layers.0.q_proj.lora_"
    return arrays[key + "B.weight"].astype(np.float64) @ arrays[key + "A.weight"]


@pytest.mark.parametrize("method", ["exact", "fedavg"])
def test_a_server_learning_rate_steps_from_the_previous_adapter_along_the_average_update(method: str) -> None:
    previous, *clients = _clients(4, 3, seed=4)
    examples, server_lr = [10, 30, 60], 3.0
    result = aggregate(method, clients, examples, rank=12, server_lr=server_lr, previous=previous)
    if method == "exact":  # exact: W + η·(mean BᵢAᵢ − W) in product space, to float rounding
        target = _product(previous) + server_lr * (_average_product(clients, examples) - _product(previous))
        got = _product(result.arrays)
        assert np.abs(got - target).max() <= 1e-6 * np.abs(target).max() and result.error < 1e-6
    else:  # fedavg: the same step on each factor
        key = "m.layers.0.q_proj.lora_A.weight"
        weights = example_weights(examples)
        average = sum(w * c[key].astype(np.float64) for c, w in zip(clients, weights, strict=True))
        expected = previous[key] + server_lr * (average - previous[key])
        np.testing.assert_allclose(result.arrays[key], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="previous global adapter"):
        aggregate(method, clients, examples, rank=12, server_lr=server_lr)


def test_the_exact_factors_keep_the_clients_scale_of_a_so_the_next_round_trains() -> None:
    # a small average update: balanced factors (√S on each side) would leave both A and B tiny
    clients = _clients(3, 4, seed=5)
    for client in clients:
        client["m.layers.0.q_proj.lora_B.weight"] *= 1e-4
    result = aggregate("exact", clients, [1, 1, 1], rank=4)
    a = result.arrays["m.layers.0.q_proj.lora_A.weight"].astype(np.float64)
    client_row_scale = np.sqrt(
        np.mean([np.sum(c["m.layers.0.q_proj.lora_A.weight"] ** 2) / 4 for c in clients])
    )
    assert np.sqrt(np.mean(np.sum(a**2, axis=1))) == pytest.approx(client_row_scale, rel=1e-5)
    assert result.error == pytest.approx(
        average_error(clients, example_weights([1, 1, 1]), result.arrays), rel=1e-5
    )
