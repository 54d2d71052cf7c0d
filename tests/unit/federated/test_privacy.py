"""Client-level differential privacy: Flower's clipping around the client, noise, the server's step along the
noised average, and the epsilon reported."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tunesmith.federated.privacy import add_noise, gaussian_epsilon, private_step


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


def test_the_server_step_under_privacy_reads_only_the_noised_average() -> None:
    rng = np.random.default_rng(1)
    key = "m.lora_A.weight"
    previous = {key: rng.normal(0, 1, (8, 8)).astype(np.float32)}
    average = {key: previous[key] + 0.01}
    noised = add_noise(average, clip=0.5, noise_multiplier=2.0, clients=4, seed=3)[key]
    for server_lr in (1.0, 4.0):
        stepped = private_step(
            previous, average, server_lr, clip=0.5, noise_multiplier=2.0, clients=4, seed=3
        )
        # a function of the noised average alone (post-processing): server_lr times its step
        np.testing.assert_allclose(
            stepped[key] - previous[key], server_lr * (noised - previous[key]), rtol=1e-4, atol=1e-5
        )


class _MovingGrid:
    """Flower's `Grid` as `run_rounds` uses it; each client replies with the global adapter plus a fixed shift."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.received: list[dict[str, np.ndarray]] = []  # the global adapter each message carried

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.clients + 1))

    def send_and_receive(self, messages: list[Any]) -> list[Any]:
        from tunesmith.federated.client import ClientUpdate
        from tunesmith.federated.messages import read_train_content, update_content

        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            arrays, _, _ = read_train_content(message.content)
            self.received.append(arrays)
            shift = {key: value + 0.01 * node for key, value in arrays.items()}
            update = ClientUpdate(
                shift, examples=10, train_loss=1.0, steps=1, trained_tokens=10, data_hash="h"
            )
            replies.append(SimpleNamespace(content=update_content(update),
                                           metadata=SimpleNamespace(src_node_id=node), has_error=lambda: False))  # fmt: skip
        return replies


def test_a_private_job_takes_the_server_step_and_spends_the_same_epsilon(
    tiny_model_dir: Path, tmp_path: Path, flower_task_identity: None
) -> None:
    from tunesmith.config import FederatedSpec
    from tunesmith.federated.server import run_rounds
    from tunesmith.federated.simulate import federation_plan, start_job

    privacy = {"clip": 1.0, "noise_multiplier": 1.5, "delta": 1e-5}
    epsilons, grids = {}, {}
    for server_lr in (1.0, 4.0):
        spec = FederatedSpec.model_validate({
            "model": str(tiny_model_dir), "client_data": ["a", "b"], "rounds": 2, "aggregation": "fedavg",
            "server_lr": server_lr, "privacy": privacy, "name": f"private-{server_lr:g}",
        })  # fmt: skip
        start = start_job(spec, tmp_path / f"job-{server_lr:g}", None)
        grids[server_lr] = _MovingGrid(2)
        summaries = run_rounds(grids[server_lr], federation_plan(spec, min_clients=2), start.arrays,
                               start.adapter_config, start.recorder)  # fmt: skip
        epsilons[server_lr] = [summary.epsilon for summary in summaries]

    assert epsilons[4.0] == epsilons[1.0] == [gaussian_epsilon(r, 1.5, 1e-5) for r in (1, 2)]
    # round 2's global adapter: the same noised average (same seed), stepped 4 times as far from round 1's start
    start, plain, stepped = grids[1.0].received[0], grids[1.0].received[2], grids[4.0].received[2]
    for key in start:
        np.testing.assert_allclose(
            stepped[key] - start[key], 4.0 * (plain[key] - start[key]), rtol=2e-3, atol=2e-3
        )


def test_privacy_needs_fedavg() -> None:
    from tunesmith.config import FederatedSpec

    with pytest.raises(ValueError, match="privacy: needs aggregation: fedavg"):
        FederatedSpec.model_validate(
            {"client_data": ["a"], "privacy": {"clip": 1.0, "noise_multiplier": 1.0}}
        )
