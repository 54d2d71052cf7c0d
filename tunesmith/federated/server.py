"""The server's rounds, read top to bottom: sample clients, send the global adapter, aggregate, record.

Owns: the initial global adapter (fresh LoRA on the base model, seeded, so every client starts from the
same A), the round loop over Flower's `Grid` (the same code in simulation and deployment), sampling a
fraction of the connected clients, turning replies into the next global adapter, and per-round recording
through a `RoundRecorder`. Written on `Grid.send_and_receive` rather than a Flower `Strategy` subclass:
the aggregation needs the adapter's structure (A and B paired), and the loop stays readable. Does not
own: the aggregation maths (`aggregate`), the wire schema (`messages`) or local training (`client`).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tunesmith.federated.aggregate import Arrays, aggregate
from tunesmith.federated.client import LocalTraining, read_adapter
from tunesmith.federated.messages import read_update_content, tensor_bytes, train_content, wire_precision
from tunesmith.federated.privacy import gaussian_epsilon, private_step
from tunesmith.federated.record import ClientReport, RoundRecorder, RoundSummary

NODE_WAIT_SECONDS = 600.0  # how long a round waits for `min_clients` to connect


@dataclass(frozen=True)
class FederationPlan:
    """The rounds a server runs (plain values from a `FederatedSpec`)."""

    rounds: int
    fraction: float
    min_clients: int
    aggregation: str  # "exact" or "fedavg"
    rank: int  # the exact aggregation's global rank
    seed: int
    training: LocalTraining  # its `round` is set per round
    server_lr: float  # the server's step along the average update (1: FedAvg)
    privacy: Privacy | None = None


@dataclass(frozen=True)
class Privacy:
    """Client-level differential privacy (see `tunesmith.federated.privacy`)."""

    clip: float
    noise_multiplier: float
    delta: float


class FederationError(RuntimeError):
    """A round could not complete (a client failed, or too few connected)."""


def initial_adapter(model_path: str, rank: int, alpha: int, dropout: float, targets: list[str] | str,
                    seed: int) -> tuple[Arrays, dict[str, Any]]:  # fmt: skip
    """A fresh LoRA adapter on the base model (B = 0, A seeded): its tensors and peft config."""
    import torch

    from tunesmith.models.adapters import add_lora
    from tunesmith.models.loading import load_model

    torch.manual_seed(seed)
    model = add_lora(load_model(model_path, dtype=torch.float32), rank, alpha, dropout, targets)
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory, safe_serialization=True)
        return read_adapter(Path(directory))


def run_rounds(grid: Any, plan: FederationPlan, arrays: Arrays, adapter_config: dict[str, Any],
               recorder: RoundRecorder,
               on_round: Callable[[RoundSummary], None] | None = None) -> list[RoundSummary]:  # fmt: skip
    """Run `plan.rounds` rounds on `grid` (a Flower `Grid`) from the global adapter `arrays`; `on_round`
    sees each recorded round (a progress bar)."""
    from flwr.app import Message, MessageType

    sampler = random.Random(plan.seed)
    # peft scales B·A by lora_alpha / r: a global adapter of another rank keeps the clients' scale.
    scale = float(adapter_config["lora_alpha"]) / int(adapter_config["r"])
    summaries = []
    for round_number in range(1, plan.rounds + 1):
        nodes = _connected(grid, plan.min_clients)
        sampled = sorted(sampler.sample(nodes, max(1, round(plan.fraction * len(nodes)))))
        clip = plan.privacy.clip if plan.privacy else None
        content = train_content(arrays, adapter_config, replace(plan.training, round=round_number), clip)
        messages = [Message(content, dst_node_id=node, message_type=MessageType.TRAIN) for node in sampled]
        replies = list(grid.send_and_receive(messages))
        failed = [reply for reply in replies if reply.has_error()]
        if failed or len(replies) != len(sampled):
            reasons = "; ".join(f"node {r.metadata.src_node_id}: {r.error.reason}" for r in failed)
            raise FederationError(
                f"round {round_number}: {len(replies) - len(failed)} of {len(sampled)} clients replied ({reasons})"
            )
        updates = [read_update_content(reply.content) for reply in replies]
        sent = tensor_bytes(content)
        reports = [
            ClientReport(node_id=reply.metadata.src_node_id, examples=u.examples, train_loss=u.train_loss,
                         steps=u.steps, trained_tokens=u.trained_tokens, bytes_received=sent,
                         bytes_sent=tensor_bytes(reply.content), data_hash=u.data_hash)
            for reply, u in zip(replies, updates, strict=True)
        ]  # fmt: skip
        # Under privacy every client weighs the same: one client moves the average by at most clip / n.
        weights = [u.examples for u in updates] if plan.privacy is None else [1] * len(updates)
        clients = [u.arrays for u in updates]
        epsilon = None
        if plan.privacy is None:
            result = aggregate(plan.aggregation, clients, weights, plan.rank, plan.server_lr, arrays)
        else:
            # Noise on the plain average (what it is calibrated to), then the server's step along the noised
            # average: post-processing, so the epsilon does not depend on server_lr (`privacy` docstring).
            # The errors reported are the plain average's.
            privacy = plan.privacy
            result = aggregate(plan.aggregation, clients, weights, plan.rank)
            stepped = private_step(arrays, result.arrays, plan.server_lr, privacy.clip,
                                   privacy.noise_multiplier, len(updates), plan.seed + round_number)  # fmt: skip
            result = replace(result, arrays=stepped)
            epsilon = gaussian_epsilon(round_number, privacy.noise_multiplier, privacy.delta)
        arrays = wire_precision(result.arrays)  # what the clients will receive, so the next step starts there
        adapter_config = {**adapter_config, "r": result.rank, "lora_alpha": scale * result.rank}
        summaries.append(
            recorder.record(round_number, result, adapter_config, plan.aggregation, reports, epsilon)
        )
        if on_round is not None:
            on_round(summaries[-1])
    return summaries


def _connected(grid: Any, minimum: int) -> list[int]:
    """The connected clients' node ids, once at least `minimum` are."""
    deadline = time.monotonic() + NODE_WAIT_SECONDS
    while len(nodes := sorted(grid.get_node_ids())) < minimum:
        if time.monotonic() > deadline:
            raise FederationError(
                f"{len(nodes)} clients connected in {NODE_WAIT_SECONDS:.0f}s; {minimum} needed"
            )
        time.sleep(0.5)
    return nodes
