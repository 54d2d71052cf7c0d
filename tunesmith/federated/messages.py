"""What travels between the server and a client, in Flower's Message API records. Nothing else does.

Owns: the two payloads and their keys. Server → client: `global` (the adapter's tensors) and `config`
(the round's local training settings, the adapter's peft config and, under privacy, the clipping norm). Client → server: `update` (the
trained adapter's tensors), `metrics` (examples, loss, steps, tokens) and `dataset` (the content hash
of the client's data). No example, prompt or answer text is ever put in a record: tests check the keys.
Does not own: training or aggregation.

Tensors travel in float16 (half the bytes of float32; the issue's budget is 5 MB per round). LoRA factors
sit well inside float16's range (|A| ≲ 0.1, |B| grows from 0, normal down to 6e-5), and rounding them is a
relative change of at most 2⁻¹¹ per value, far below what a round of training moves them. The server
aggregates in float64 from exactly what it received, so the exact aggregation still matches the average
of the clients' updates to float rounding; it also rounds the global adapter it keeps, so the server's
copy is the one the clients train from.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from tunesmith.federated.aggregate import Arrays
from tunesmith.federated.client import ClientUpdate, LocalTraining

TO_CLIENT_KEYS = frozenset({"global", "config"})
TO_SERVER_KEYS = frozenset({"update", "metrics", "dataset"})
WIRE_DTYPE = np.float16  # see the module docstring
CLIPPING_NORM = "clipping_norm"  # the config key flwr.clientapp.mod.fixedclipping_mod reads


def train_content(
    arrays: Arrays, adapter_config: dict[str, Any], training: LocalTraining, clip: float | None = None
) -> Any:
    """The `RecordDict` a sampled client receives for a round; with `clip`, Flower's clipping mod's key."""
    from flwr.app import ConfigRecord, RecordDict

    values = {**asdict(training), "adapter_config": json.dumps(adapter_config, sort_keys=True)}
    config = ConfigRecord(values if clip is None else {**values, CLIPPING_NORM: clip})
    return RecordDict({"global": _record(arrays), "config": config})


def read_train_content(content: Any) -> tuple[Arrays, dict[str, Any], LocalTraining]:
    """The global adapter, its peft config and the round's settings from `train_content`'s record."""
    config = dict(content["config"])
    adapter_config = json.loads(str(config.pop("adapter_config")))
    config.pop(CLIPPING_NORM, None)  # read by Flower's clipping mod around the client
    training = LocalTraining(
        model=str(config["model"]), round=int(config["round"]), local_steps=int(config["local_steps"]),
        batch_size=int(config["batch_size"]), lr=float(config["lr"]), max_seq_len=int(config["max_seq_len"]),
        pack_len=int(config["pack_len"]), seed=int(config["seed"]),
    )  # fmt: skip
    return _arrays(content["global"]), adapter_config, training


def update_content(update: ClientUpdate) -> Any:
    """The `RecordDict` a client replies with."""
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    metrics = MetricRecord({"examples": update.examples, "train_loss": update.train_loss, "steps": update.steps,
                            "trained_tokens": update.trained_tokens})  # fmt: skip
    return RecordDict(
        {
            "update": _record(update.arrays),
            "metrics": metrics,
            "dataset": ConfigRecord({"hash": update.data_hash}),
        }
    )


def read_update_content(content: Any) -> ClientUpdate:
    metrics = content["metrics"]
    return ClientUpdate(
        arrays=_arrays(content["update"]), examples=int(metrics["examples"]),
        train_loss=float(metrics["train_loss"]), steps=int(metrics["steps"]),
        trained_tokens=int(metrics["trained_tokens"]), data_hash=str(content["dataset"]["hash"]),
    )  # fmt: skip


def tensor_bytes(content: Any) -> int:
    """Bytes of the serialised tensors in a record: the adapter's share of a message on the wire."""
    return sum(len(array.data) for record in content.array_records.values() for array in record.values())


def wire_precision(arrays: Arrays) -> Arrays:
    """`arrays` as they arrive at the other end: rounded to float16, held as float32."""
    return {key: value.astype(WIRE_DTYPE).astype(np.float32) for key, value in arrays.items()}


def _record(arrays: Arrays) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord(
        {key: Array(np.ascontiguousarray(value, dtype=WIRE_DTYPE)) for key, value in arrays.items()}
    )


def _arrays(record: Any) -> Arrays:
    return {key: np.asarray(array.numpy(), dtype=np.float32) for key, array in record.items()}
