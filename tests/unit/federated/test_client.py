"""A client's round continues the global adapter it received (train_sft's init_adapter), on its own data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import DEMO


def test_a_local_round_starts_from_the_global_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from tunesmith.federated.client import LocalTraining, train_local_round
    from tunesmith.federated.server import initial_adapter

    arrays, adapter_config = initial_adapter(str(tiny_model_dir), 2, 4, 0.0, ["q_proj", "v_proj"], seed=0)
    arrays = {key: np.full_like(value, 0.5) if ".lora_B." in key else value for key, value in arrays.items()}
    training = LocalTraining(model=str(tiny_model_dir), round=1, local_steps=1, batch_size=2, lr=1e-6,
                             max_seq_len=512, pack_len=512, seed=0)  # fmt: skip

    update = train_local_round(arrays, adapter_config, training, DEMO / "val.jsonl", tmp_path / "client")

    assert list(update.arrays) == list(arrays)  # the keys and order the server sent
    b = np.concatenate([value.ravel() for key, value in update.arrays.items() if ".lora_B." in key])
    assert np.allclose(b, 0.5, atol=1e-3)  # a fresh adapter's B would start at zero
    assert update.examples == 40 and update.steps == 1 and len(update.data_hash) == 64
