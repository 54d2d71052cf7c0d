"""Client-level differential privacy: Flower's clipping around the client, noise and the epsilon reported."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tunesmith.federated.privacy import add_noise, gaussian_epsilon


def test_epsilon_is_the_minimum_over_renyi_orders_and_grows_with_rounds() -> None:
    def by_grid(rounds: int, z: float, delta: float) -> float:
        orders = np.linspace(1.001, 500, 200_000)
        return float(np.min(rounds * orders / (2 * z**2) + math.log(1 / delta) / (orders - 1)))

    assert gaussian_epsilon(5, 1.1, 1e-5) == pytest.approx(by_grid(5, 1.1, 1e-5), rel=1e-4)
    assert gaussian_epsilon(10, 1.1, 1e-5) > gaussian_epsilon(5, 1.1, 1e-5) > gaussian_epsilon(5, 2.0, 1e-5)


def test_noise_has_the_standard_deviation_of_the_mean_of_clipped_updates() -> None:
    arrays = {"m.lora_A.weight": np.zeros((200, 200), dtype=np.float32)}
    noisy = add_noise(arrays, clip=0.5, noise_multiplier=2.0, clients=4, seed=0)
    assert float(noisy["m.lora_A.weight"].std()) == pytest.approx(2.0 * 0.5 / 4, rel=0.02)


def test_the_client_update_is_clipped_when_the_round_asks() -> None:
    from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

    from tunesmith.federated.apps import _clip_when_asked

    sent = {
        "m.lora_A.weight": np.ones((2, 3), dtype=np.float32),
        "m.lora_B.weight": np.zeros((3, 2), dtype=np.float32),
    }
    trained = {key: value + 3.0 for key, value in sent.items()}  # an update of norm 3 * sqrt(12)

    def message(arrays: dict[str, np.ndarray], config: dict[str, Any]) -> Any:
        content = RecordDict(
            {"global": ArrayRecord({k: Array(v) for k, v in arrays.items()}), "config": ConfigRecord(config)}
        )
        return SimpleNamespace(content=content, has_error=lambda: False)

    def client(_message: Any, _context: Any) -> Any:
        return message(trained, {"round": 1})

    for config, norm in (({"clipping_norm": 0.5}, 0.5), ({}, 3.0 * math.sqrt(12))):
        reply = _clip_when_asked(message(sent, {"round": 1, **config}), None, client)
        update = [reply.content["global"][k].numpy() - sent[k] for k in sent]
        assert math.sqrt(sum(float((u**2).sum()) for u in update)) == pytest.approx(norm, rel=1e-5)


def test_privacy_needs_fedavg() -> None:
    from tunesmith.config import FederatedSpec

    with pytest.raises(ValueError, match="privacy: needs aggregation: fedavg"):
        FederatedSpec.model_validate(
            {"client_data": ["a"], "privacy": {"clip": 1.0, "noise_multiplier": 1.0}}
        )
