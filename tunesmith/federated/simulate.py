"""`tunesmith federated simulate`: N clients and the server on one machine, on Flower's simulation engine.

Owns: turning a `FederatedSpec` into the clients' datasets (given, or partitions of one), the initial
global adapter and the server's plan, and running them with `flwr.simulation.run_simulation` on the Ray
backend, each client limited to one CPU (and one torch thread). Does not own: the rounds (`server`),
local training (`client`) or recording (`record`).

`run_simulation` is marked deprecated in Flower 1.42 in favour of `flwr run` against a local SuperLink;
it is still Flower's public, documented in-process entry point, and the one that needs no app packaging
(see `tunesmith.federated.deploy` for what `flwr run` needs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import FederatedSpec, tunesmith_home
from tunesmith.federated.aggregate import Arrays
from tunesmith.federated.client import LocalTraining
from tunesmith.federated.partition import partition_rows, read_partition_rows, write_partitions
from tunesmith.federated.record import RoundRecorder, RoundSummary
from tunesmith.federated.server import FederationError, FederationPlan, Privacy, initial_adapter, run_rounds
from tunesmith.registry.store import Registry
from tunesmith.train.rundir import atomic_write_text


@dataclass(frozen=True)
class FederatedResult:
    """A finished federated job: each round's summary, the final adapter and the traffic."""

    name: str
    out: str
    clients: int
    rounds: list[RoundSummary]
    final_adapter: str  # name@version ("" without a registry)
    final_adapter_dir: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def federation_plan(spec: FederatedSpec, min_clients: int) -> FederationPlan:
    training = LocalTraining(
        model=spec.model, round=0, local_steps=spec.local_steps, batch_size=spec.batch_size, lr=spec.lr,
        max_seq_len=spec.max_seq_len, pack_len=spec.pack_len, seed=spec.seed,
    )  # fmt: skip
    privacy = spec.privacy
    return FederationPlan(
        rounds=spec.rounds, fraction=spec.fraction, min_clients=min_clients, aggregation=spec.aggregation,
        rank=spec.resolved_global_rank(), seed=spec.seed, training=training,
        privacy=Privacy(privacy.clip, privacy.noise_multiplier, privacy.delta) if privacy else None,
        server_lr=spec.server_lr,
    )  # fmt: skip


def job_folder(spec: FederatedSpec) -> Path:
    return spec.out or tunesmith_home() / "federated" / spec.name


def client_datasets(spec: FederatedSpec, out: Path) -> list[Path]:
    """Each simulated client's dataset: `client_data` as given, or the partition's shares written under `out`."""
    if spec.client_data is not None:
        missing = [str(path) for path in spec.client_data if not path.exists()]
        if missing:
            raise FileNotFoundError(f"client_data: no such file or folder: {', '.join(missing)}")
        return spec.client_data
    partition = spec.partition
    if partition is None:
        raise FederationError("a simulation needs client_data or partition in the config")
    rows = read_partition_rows(partition.data)
    shares = partition_rows(
        rows, partition.clients, partition.by, partition.column, partition.alpha, partition.seed
    )
    return write_partitions(rows, shares, out / "partitions")


@dataclass(frozen=True)
class JobStart:
    """What the server holds before round 1: the recorder and the initial global adapter."""

    recorder: RoundRecorder
    arrays: Arrays
    adapter_config: dict[str, Any]


def start_job(spec: FederatedSpec, out: Path, registry: Registry | None) -> JobStart:
    """The round recorder (with the base model's tokenizer) and a fresh, seeded global adapter."""
    from tunesmith.models.loading import load_tokenizer, resolve_model

    model_path = resolve_model(spec.model)
    job = spec.model_dump(mode="json")
    recorder = RoundRecorder(out, spec.name, spec.model, load_tokenizer(model_path), registry, job)
    lora = spec.lora
    arrays, adapter_config = initial_adapter(
        model_path, lora.r, lora.alpha, lora.dropout, lora.target_modules, spec.seed
    )
    return JobStart(recorder, arrays, adapter_config)


def finish_job(
    spec: FederatedSpec, out: Path, clients: int, summaries: list[RoundSummary]
) -> FederatedResult:
    """The job's result, also written to `out/result.json`."""
    if len(summaries) != spec.rounds:
        raise FederationError(f"the job stopped after {len(summaries)} of {spec.rounds} rounds (see its log)")
    last = summaries[-1]
    result = FederatedResult(spec.name, str(out), clients, summaries, last.adapter, last.adapter_dir)
    atomic_write_text(out / "result.json", json.dumps(result.to_dict(), indent=2))
    return result


def simulate(
    spec: FederatedSpec, registry: Registry | None, on_round: Callable[[RoundSummary], None] | None = None
) -> FederatedResult:
    """Run the federated job of `spec` in simulation; rounds are recorded in `registry` when given, and
    `on_round` sees each one as it ends."""
    from flwr.simulation import run_simulation

    out = job_folder(spec)
    data = client_datasets(spec, out)
    start = start_job(spec, out, registry)
    plan = federation_plan(spec, min_clients=len(data))
    summaries: list[RoundSummary] = []
    errors: list[BaseException] = []

    def main(grid: Any, context: Any) -> None:
        try:
            summaries.extend(
                run_rounds(grid, plan, start.arrays, start.adapter_config, start.recorder, on_round)
            )
        except BaseException as error:  # re-raised below: the simulation only logs its ServerApp's errors
            errors.append(error)
            raise

    from tunesmith.federated.apps import client_app, server_app

    run_simulation(
        server_app=server_app(main), client_app=client_app(data, out / "clients"), num_supernodes=len(data),
        backend_config=backend_config(len(data)),
    )  # fmt: skip
    if errors:
        raise errors[0]
    return finish_job(spec, out, len(data), summaries)


def backend_config(clients: int) -> dict[str, Any]:
    """Ray backend: one CPU per client, as many clients at once as this machine has cores."""
    cores = min(clients, os.cpu_count() or 1)
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": cores, "include_dashboard": False, "logging_level": "error"},
    }
