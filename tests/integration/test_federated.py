"""Federated fine-tuning end to end on the tiny model, on Flower's two runtimes: the simulation (Ray) and the
deployment (a SuperLink and SuperNodes as separate processes on loopback). Both are slow: the fast tests of
the same rounds (a stand-in Grid, clients trained in-process) are in tests/unit/federated."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import DEMO
from tunesmith.config import FederatedSpec, default_database_url
from tunesmith.registry.store import Registry


@pytest.mark.slow  # Ray's start and its workers' imports: about 80 s on a shared 2-core machine
def test_simulation_records_each_round_and_the_final_adapter_loads(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    from tunesmith.federated.simulate import simulate
    from tunesmith.models.adapters import load_adapter

    spec = FederatedSpec.model_validate({
        "model": str(tiny_model_dir), "rounds": 2, "local_steps": 2, "batch_size": 4, "max_seq_len": 512,
        "pack_len": 512, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "partition": {"data": str(DEMO / "train.jsonl"), "clients": 3, "by": "iid", "seed": 1},
        "out": str(tmp_path / "fed"), "name": "fed-demo",
    })  # fmt: skip
    registry = Registry(default_database_url()).connect()

    result = simulate(spec, registry)

    assert [r.adapter for r in result.rounds] == ["fed-demo@1", "fed-demo@2"]
    assert all(len(r.clients) == 3 and r.traffic_bytes > 0 for r in result.rounds)
    second = registry.get_run(result.rounds[1].run_id)
    assert second is not None and second["config"]["previous_run"] == result.rounds[0].run_id
    summary = json.loads((tmp_path / "fed" / "round-002" / "round.json").read_text())
    assert summary["error"] <= summary["fedavg_error"]
    model = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), Path(result.final_adapter_dir))
    assert any("lora_A" in name for name, _ in model.named_parameters())


@pytest.mark.slow  # four processes and a ClientApp process per message: minutes on a shared 2-core machine
@pytest.mark.skipif(
    os.environ.get("TUNESMITH_FEDERATED_E2E") != "1",
    reason="minutes of process starts; the suite's budget is 15 minutes: TUNESMITH_FEDERATED_E2E=1 runs it",
)
def test_server_and_three_client_processes_on_loopback_complete_three_rounds(
    tiny_model_dir: Path, tmp_path: Path, isolated_home: Path
) -> None:
    """Flower's deployment runtime: a SuperLink (`federated server`) and three SuperNodes, real processes."""
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO, free_port
    from tunesmith.federated.deploy import stop_process_tree

    lines = (DEMO / "val.jsonl").read_text().splitlines()
    data = []
    for number in range(3):
        path = tmp_path / f"owner-{number}" / "train.jsonl"
        path.parent.mkdir()
        path.write_text("\n".join(lines[number::3]) + "\n")
        data.append(path)
    config = tmp_path / "fed.yaml"
    config.write_text(yaml.safe_dump({
        "model": str(tiny_model_dir), "rounds": 3, "local_steps": 1, "min_clients": 3, "batch_size": 4,
        "max_seq_len": 512, "pack_len": 512, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "out": str(tmp_path / "server"), "name": "branches",
    }))  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TUNESMITH_HOME": str(isolated_home),
        "OMP_NUM_THREADS": "1",
    }
    port = free_port()
    tunesmith = [sys.executable, "-m", "tunesmith", "federated"]
    server = subprocess.Popen([*tunesmith, "server", "--config", str(config), "--port", str(port), "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    clients = [
        subprocess.Popen(
            [
                *tunesmith,
                "client",
                "--data",
                str(path),
                "--server",
                f"127.0.0.1:{port}",
                "--port",
                str(free_port()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )  # fmt: skip
        for path in data
    ]
    try:
        output, errors = server.communicate(timeout=400)
    finally:  # also on a timeout: each process with what Flower started under it (SuperExec, app processes)
        for process in [server, *clients]:
            stop_process_tree(process.pid)
            process.wait()
    assert server.returncode == 0, errors.decode()[-3000:]
    result = json.loads(output)
    assert [r["adapter"] for r in result["rounds"]] == ["branches@1", "branches@2", "branches@3"]
    assert all(len(r["clients"]) == 3 for r in result["rounds"])
    assert sum(c["examples"] for c in result["rounds"][0]["clients"]) == 40
