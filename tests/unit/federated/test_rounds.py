"""The server's rounds over a stand-in for Flower's Grid: clients train with train_sft in-process.

What travels is checked key by key (adapter tensors and counts, never example text), and each round is
recorded: a run whose adapter is the next version, lineage to the previous round, an audit record.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.conftest import DEMO
from tunesmith.config import FederatedSpec, default_database_url
from tunesmith.federated.messages import TO_CLIENT_KEYS, TO_SERVER_KEYS, read_train_content, update_content
from tunesmith.federated.record import RoundSummary
from tunesmith.registry.store import Registry


class LocalGrid:
    """Flower's `Grid` as `run_rounds` uses it, delivering each message to a client trained in-process."""

    def __init__(self, data: list[Path], work: Path) -> None:
        self.data, self.work = data, work
        self.sent: list[Any] = []
        self.replies: list[Any] = []

    def get_node_ids(self) -> list[int]:
        return list(range(1, len(self.data) + 1))

    def send_and_receive(self, messages: list[Any]) -> list[Any]:
        from tunesmith.federated.client import train_local_round

        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            arrays, adapter_config, training = read_train_content(message.content)
            update = train_local_round(
                arrays, adapter_config, training, self.data[node - 1], self.work / str(node)
            )
            content = update_content(update)
            replies.append(
                SimpleNamespace(
                    content=content, metadata=SimpleNamespace(src_node_id=node), has_error=lambda: False
                )
            )
            self.sent.append(message.content)
        self.replies += replies
        return replies


def _text_of_every_row(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [m["content"] for row in rows for m in row["messages"]]


def test_rounds_send_only_weights_and_are_recorded_with_lineage(
    tiny_model_dir: Path, tmp_path: Path, flower_task_identity: None
) -> None:
    from tunesmith.federated.server import run_rounds
    from tunesmith.federated.simulate import client_datasets, federation_plan, start_job

    spec = FederatedSpec.model_validate({
        "model": str(tiny_model_dir), "rounds": 2, "local_steps": 2, "batch_size": 4, "max_seq_len": 512,
        "pack_len": 512, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "aggregation": "exact",
        "partition": {"data": str(DEMO / "val.jsonl"), "clients": 2, "by": "iid"},
        "out": str(tmp_path / "fed"), "name": "shops",
    })  # fmt: skip
    registry = Registry(default_database_url()).connect()
    data = client_datasets(spec, tmp_path / "fed")
    start = start_job(spec, tmp_path / "fed", registry)
    grid = LocalGrid(data, tmp_path / "clients")

    seen: list[RoundSummary] = []  # what a progress bar is shown
    summaries = run_rounds(
        grid, federation_plan(spec, min_clients=2), start.arrays, start.adapter_config, start.recorder,
        on_round=seen.append,
    )  # fmt: skip
    assert seen == summaries

    # only weights travel: the payload keys, and no example's text in any string the records carry
    assert all(set(content.keys()) == TO_CLIENT_KEYS for content in grid.sent)
    assert all(set(reply.content.keys()) == TO_SERVER_KEYS for reply in grid.replies)
    strings = [
        str(v)
        for c in grid.sent + [r.content for r in grid.replies]
        for rec in c.config_records.values()
        for v in rec.values()
    ]
    texts = _text_of_every_row(DEMO / "val.jsonl")
    assert not any(text in string for text in texts for string in strings)
    # adapter tensors travel in float16 both ways: half the bytes of the float32 adapter
    from tunesmith.federated.aggregate import payload_bytes
    from tunesmith.federated.messages import tensor_bytes

    for content in grid.sent + [reply.content for reply in grid.replies]:
        assert {a.dtype for r in content.array_records.values() for a in r.values()} == {"float16"}
        # half the float32 bytes, plus each array's small .npy header
        assert tensor_bytes(content) <= payload_bytes(start.arrays) / 2 + 200 * len(start.arrays)
    # each round: a run, the next adapter version, lineage, an audit record with per-client metrics
    assert [s.adapter for s in summaries] == ["shops@1", "shops@2"]
    second = registry.get_run(summaries[1].run_id)
    assert second is not None and second["status"] == "succeeded"
    assert second["config"]["previous_run"] == summaries[0].run_id
    assert second["config"]["init_adapter"] == summaries[0].adapter_dir
    from tunesmith.audit.trail import read_log

    rounds = [r for r in read_log(registry) if r["action"] == "federated.round"]
    assert [r["target"] for r in rounds] == ["shops@1", "shops@2"]
    assert rounds[1]["before"] == {"adapter": "shops@1", "run_id": summaries[0].run_id}
    client = rounds[1]["after"]["clients"][0]
    assert set(client) == {
        "node_id",
        "examples",
        "train_loss",
        "steps",
        "trained_tokens",
        "bytes_received",
        "bytes_sent",
        "data_hash",
    }
    assert sum(c["examples"] for c in rounds[1]["after"]["clients"]) == 40
    assert (
        summaries[1].traffic_bytes == sum(c.bytes_received + c.bytes_sent for c in summaries[1].clients) > 0
    )
    # the clients trained: the global adapter's B moved off zero
    final = json.loads((Path(summaries[1].adapter_dir) / "adapter_config.json").read_text())
    assert final["r"] == 4 and summaries[1].error <= summaries[1].fedavg_error
    # the final adapter is a normal peft folder: it loads as any trained adapter does
    from transformers import AutoModelForCausalLM

    from tunesmith.models.adapters import load_adapter

    model = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), Path(summaries[1].adapter_dir))
    trained_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert trained_b and any(float(p.abs().sum()) > 0 for p in trained_b)  # B left zero: the clients trained


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"rounds": 0, "client_data": ["a"]}, "rounds: Input should be greater than 0"),
        (
            {"partition": {"data": "x", "clients": 1}},
            "partition.clients: Input should be greater than or equal to 2",
        ),
        ({"aggregation": "median"}, "aggregation: Input should be 'exact' or 'fedavg'"),
        (
            {"client_data": ["a"], "partition": {"data": "x", "clients": 2}},
            "set client_data or partition, not both",
        ),
        ({"fraction": 1.5}, "fraction: Input should be less than or equal to 1"),
        ({"rounds": 2, "rouns": 3}, "rouns: Extra inputs are not permitted"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, raw: dict[str, Any], message: str) -> None:
    import yaml

    from tunesmith.config import ConfigError, load_federated_spec

    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=message):
        load_federated_spec(path)


def test_the_shipped_federated_config_loads() -> None:
    from tests.conftest import REPO
    from tunesmith.config import load_federated_spec

    spec = load_federated_spec(REPO / "configs" / "federated" / "fed.yaml")
    assert spec.num_clients() == 4 and spec.partition is not None and spec.partition.data.is_file()
    # it leaves the server step and learning rate to the defaults, which are the measured values (RESULTS.md)
    assert (spec.server_lr, spec.lr) == (4.0, 1e-3)
