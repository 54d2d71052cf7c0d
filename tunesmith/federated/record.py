"""Recording a federated job: each round's global adapter as a versioned adapter, its run and audit record.

Owns: the server folder (`round-<r>/adapter`: a normal peft adapter folder with the base model's tokenizer
and a model card, `round-<r>/round.json`: the round's summary), a registry run per round whose adapter is
the next version of the job's name (lineage: each round's run names the previous round's adapter as its
`init_adapter` and run), and a `federated.round` audit record with the per-client metrics. Per-client
metrics are counts, losses and bytes: no client data reaches the server, so none is recorded.
Does not own: the rounds themselves (`tunesmith.federated.server`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.audit.trail import append, local_actor
from tunesmith.federated.aggregate import Aggregate
from tunesmith.federated.client import write_adapter
from tunesmith.models.adapters import model_card
from tunesmith.registry.store import Registry
from tunesmith.train.rundir import atomic_write_text


@dataclass(frozen=True)
class ClientReport:
    """What the server knows of one client's round: no examples, only counts, loss and traffic."""

    node_id: int
    examples: int
    train_loss: float
    steps: int
    trained_tokens: int
    bytes_received: int  # the global adapter sent to it
    bytes_sent: int  # its trained adapter
    data_hash: str  # content hash of its training data (identifies a dataset version, reveals no row)


@dataclass(frozen=True)
class RoundSummary:
    round: int
    run_id: str
    adapter: str  # name@version in the registry ("" without a registry)
    adapter_dir: str
    aggregation: str
    rank: int
    error: float  # relative distance of the global update from the exact average of the clients'
    fedavg_error: float
    train_loss: float  # example-weighted mean of the clients'
    traffic_bytes: int  # both ways, all clients
    clients: list[ClientReport] = field(default_factory=list)
    epsilon: float | None = None  # differential privacy spent so far (None without it)


@dataclass
class RoundRecorder:
    """Writes each round under `out` and, with a registry, registers it (see the module docstring)."""

    out: Path
    name: str
    base_model: str
    tokenizer: PreTrainedTokenizerBase
    registry: Registry | None
    job: dict[str, Any]  # the federated spec as JSON: each round's run config
    job_id: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    )
    previous: RoundSummary | None = None

    def record(self, round_number: int, aggregate: Aggregate, adapter_config: dict[str, Any],
               aggregation: str, clients: list[ClientReport], epsilon: float | None) -> RoundSummary:  # fmt: skip
        """Save round `round_number`'s global adapter and register it; returns its summary."""
        run_id = f"fed-{self.job_id}-r{round_number}"
        round_dir = self.out / f"round-{round_number:03d}"
        adapter_dir = round_dir / "adapter"
        total = sum(client.examples for client in clients)
        loss = sum(client.train_loss * client.examples for client in clients) / total
        write_adapter(aggregate.arrays, adapter_config, adapter_dir)
        self.tokenizer.save_pretrained(str(adapter_dir))
        hyperparameters = {"round": round_number, "aggregation": aggregation, "rank": aggregate.rank,
                           "clients": len(clients), "examples": total}  # fmt: skip
        card = model_card(run_id=run_id, base_model=self.base_model, method="lora", data_hash=_data_hash(clients),
                          hyperparameters=hyperparameters, metrics={"train_loss": round(loss, 4)})  # fmt: skip
        atomic_write_text(adapter_dir / "README.md", card)
        adapter = (
            self._register(run_id, round_number, round_dir, adapter_dir, clients, aggregate, loss)
            if self.registry
            else ""
        )
        summary = RoundSummary(
            round=round_number, run_id=run_id, adapter=adapter, adapter_dir=str(adapter_dir),
            aggregation=aggregation, rank=aggregate.rank, error=aggregate.error,
            fedavg_error=aggregate.fedavg_error, train_loss=loss,
            traffic_bytes=sum(c.bytes_received + c.bytes_sent for c in clients), clients=clients, epsilon=epsilon,
        )  # fmt: skip
        atomic_write_text(round_dir / "round.json", json.dumps(asdict(summary), indent=2))
        self.previous = summary
        return summary

    def _register(self, run_id: str, round_number: int, round_dir: Path, adapter_dir: Path,
                  clients: list[ClientReport], aggregate: Aggregate, loss: float) -> str:  # fmt: skip
        assert self.registry is not None
        previous = self.previous
        config = {
            **self.job, "model": self.base_model, "tuning": "lora", "name": self.name,
            "data": f"federated: {len(clients)} clients", "round": round_number, "job": self.job_id,
            "init_adapter": previous.adapter_dir if previous else None,
            "previous_run": previous.run_id if previous else None,
        }  # fmt: skip
        now = datetime.now(UTC).isoformat()
        self.registry.record_event(run_id, "running", f"federated round {round_number}", {"config": config, "run_dir": str(round_dir)}, now)  # fmt: skip
        outcome = {
            "trained_tokens": sum(c.trained_tokens for c in clients), "wall_seconds": 0.0, "train_loss": loss,
            "val_loss": None, "tokens_per_second": 0.0, "steps": max(c.steps for c in clients), "device": "federated",
            "precision": "-", "peak_memory_gb": 0.0, "data_hash": _data_hash(clients),
            "num_examples": sum(c.examples for c in clients), "artifact_dir": str(adapter_dir),
        }  # fmt: skip
        self.registry.record_event(run_id, "succeeded", f"round {round_number} aggregated", outcome, now, adapter_name=self.name)  # fmt: skip
        run = self.registry.get_run(run_id)
        assert run is not None and run["adapters"], f"run {run_id} registered no adapter"
        adapter = f"{self.name}@{run['adapters'][-1]['version']}"
        with self.registry.session() as session, session.begin():
            append(session, local_actor(), "federated.round", adapter,
                   {"adapter": previous.adapter, "run_id": previous.run_id} if previous else None,
                   {"run_id": run_id, "round": round_number, "error": aggregate.error,
                    "fedavg_error": aggregate.fedavg_error, "clients": [asdict(c) for c in clients]})  # fmt: skip
        return adapter


def _data_hash(clients: list[ClientReport]) -> str:
    """One content hash for the round's data: over the clients' own hashes, in sorted order."""
    return hashlib.sha256("\n".join(sorted(client.data_hash for client in clients)).encode()).hexdigest()
