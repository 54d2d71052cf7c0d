"""The federated job (`fed.yaml`): who holds which data, how many rounds, how the server aggregates.

Owns: `FederatedSpec` and its parts (`PartitionSpec`, `PrivacySpec`), read by `tunesmith federated
simulate` and `tunesmith federated server`, and `load_federated_spec`, whose errors name the file and the
key. Does not own: running anything (`tunesmith.federated`); no torch, no flwr.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from tunesmith.config.base import DEFAULT_MODEL, ConfigError, _Spec


class PartitionSpec(_Spec):
    """One dataset split among simulated clients (each client's share stays on its own node)."""

    data: Path = Field(
        ..., description="The dataset to split: a data file or a prepared folder (its train split)."
    )
    clients: int = Field(..., ge=2, description="How many clients share it.")
    by: Literal["iid", "label", "column", "dirichlet"] = Field(
        "iid",
        description="iid: a seeded shuffle dealt evenly; label: each label goes whole to one client (labels dealt "
        "round robin); column: each value of `column` goes whole to one client (branches, clinics); dirichlet: "
        "each label's rows shared out by proportions drawn from Dirichlet(alpha) (non-IID label skew).",
    )
    column: str = Field(
        "label", description="The row field that `label`, `column` and `dirichlet` partitions read."
    )
    alpha: float = Field(
        0.5, gt=0, description="dirichlet: concentration; small values give each client few labels."
    )
    seed: int = Field(0, description="Seed of the shuffle and of the Dirichlet draws.")


class PrivacySpec(_Spec):
    """Client-level differential privacy: each client's update clipped, Gaussian noise on their average."""

    clip: float = Field(
        ..., gt=0, description="L2 norm each client's update (all adapter tensors) is clipped to."
    )
    noise_multiplier: float = Field(
        ..., gt=0, description="Noise standard deviation on the sum of the updates, as a multiple of clip."
    )
    delta: float = Field(
        1e-5, gt=0, lt=1, description="The delta of the (epsilon, delta) guarantee reported."
    )


class FederatedLoraSpec(_Spec):
    """The shared adapter: its tensors are what every round moves, so the defaults are small (`LoraSpec`'s keys)."""

    r: int = Field(
        4,
        gt=0,
        description="LoRA rank. r 4 on q_proj and v_proj of SmolLM2-135M is 0.23 M values, 0.48 MB a message in "
        "float16: 5 clients a round move 4.8 MB both ways (r 8 on every linear layer: 10 times that).",
    )
    alpha: int = Field(8, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["q_proj", "v_proj"],
        description="Module names to adapt, or 'all-linear' for every linear layer but the head (more traffic).",
    )


class FederatedSpec(_Spec):
    """A federated fine-tuning job: clients train a shared LoRA adapter; only adapter weights travel."""

    model: str = Field(
        DEFAULT_MODEL,
        description="Base model every client holds: catalog name, Hugging Face id or local directory.",
    )
    client_data: list[Path] | None = Field(
        None, description="Simulation: each client's own dataset (a file or prepared folder), one per client."
    )
    partition: PartitionSpec | None = Field(
        None, description="Simulation: split one dataset among the clients instead of client_data."
    )
    rounds: int = Field(3, gt=0, description="Federated rounds.")
    fraction: float = Field(
        1.0, gt=0, le=1, description="Share of the clients sampled each round (at least one)."
    )
    min_clients: int = Field(
        1, gt=0, description="Deployment: clients that must be connected before a round starts."
    )
    local_steps: int = Field(10, gt=0, description="Optimizer steps each sampled client runs per round.")
    aggregation: Literal["exact", "fedavg"] = Field(
        "exact",
        description="exact: the example-weighted average of the clients' products B·A, factorised back to "
        "global_rank by SVD (exact when global_rank holds the average's rank; the residual is reported); "
        "fedavg: average A and B separately (FlowerTune's; its error is reported beside it).",
    )
    global_rank: int | None = Field(
        None,
        gt=0,
        description="exact: rank of the global adapter; default lora.r (a truncated SVD, the best rank-r "
        "approximation). clients x lora.r keeps one round's average exactly.",
    )
    server_lr: float = Field(
        4.0,
        gt=0,
        description="The server's step along the clients' average update (1: plain FedAvg). Above 1 it makes "
        "up for averaging side-by-side local runs (Reddi et al. 2021); 4 is the value measured with 5 clients a "
        "round (FedAvg's 1 was no better than one owner alone; benchmarks/RESULTS.md). Under privacy it steps "
        "along the noised average (post-processing: the epsilon is unchanged).",
    )
    lora: FederatedLoraSpec = Field(default_factory=FederatedLoraSpec)
    batch_size: int = Field(8, gt=0, description="Examples per local batch.")
    lr: float = Field(
        1e-3, gt=0, description="Clients' peak learning rate (1e-3: the measured one; benchmarks/RESULTS.md)."
    )
    max_seq_len: int = Field(512, ge=16, description="Longest example in tokens; longer ones are truncated.")
    pack_len: int = Field(1024, ge=16, description="Target packed-row length of the local batches.")
    privacy: PrivacySpec | None = Field(
        None,
        description="Differential privacy (client-side fixed clipping, Gaussian noise at the server on the "
        "equal-weight average, then the server_lr step: post-processing; needs aggregation: fedavg); epsilon "
        "spent is reported each round.",
    )
    seed: int = Field(42, description="Seed of the initial adapter, client sampling and local training.")
    name: str = Field("federated", description="Adapter name in the registry; each round is a new version.")
    out: Path | None = Field(None, description="Server folder; default TUNESMITH_HOME/federated/<name>.")

    @model_validator(mode="after")
    def _one_source_of_client_data(self) -> FederatedSpec:
        if self.client_data is not None and self.partition is not None:
            raise ValueError("set client_data or partition, not both")
        if self.client_data is not None and not self.client_data:
            raise ValueError("client_data: list at least one dataset")
        if self.privacy is not None and self.aggregation != "fedavg":
            raise ValueError(
                "privacy: needs aggregation: fedavg (noise is added to the averaged adapter; the exact "
                "aggregation reads each client's factors, which privacy must not release)"
            )
        return self

    def num_clients(self) -> int | None:
        """Simulated clients (None when the clients join a deployment on their own)."""
        if self.partition is not None:
            return self.partition.clients
        return len(self.client_data) if self.client_data is not None else None

    def resolved_global_rank(self) -> int:
        return self.global_rank if self.global_rank is not None else self.lora.r


def load_federated_spec(path: Path) -> FederatedSpec:
    """Read `fed.yaml`; errors name the file and the key (`fed.yaml: partition.alpha: ...`).

    Relative data paths are read relative to the file.
    """
    from tunesmith.config import format_validation_error  # the package imports this module

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot read the federated config: {error}") from error
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with keys like 'rounds:', got {type(raw).__name__}")
    try:
        spec = FederatedSpec.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source=str(path))) from error
    if spec.client_data is not None:
        spec.client_data = [item if item.is_absolute() else path.parent / item for item in spec.client_data]
    if spec.partition is not None and not spec.partition.data.is_absolute():
        spec.partition.data = path.parent / spec.partition.data
    return spec
