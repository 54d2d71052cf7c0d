"""Starting the processes of a multi-process run: `tunesmith train --nproc N` through torchrun.

Owns: `check_launch` (refuses, naming the flag, a launch that cannot work, before any process starts),
`launch_training` (starts `python -m tunesmith train` in each process through `torch.distributed.run`,
torchrun's own programmatic entry, so `torchrun -m tunesmith train` by hand does the same), and how a
process tells it is one of those workers (`is_worker`, `worker_rank`). Does not own: what the processes
do together once started (`tunesmith.train.distributed`). Imports no trainer: the launching process of a
`--nproc` run loads no model.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from tunesmith.config import ConfigError, TrainSpec
from tunesmith.train.distributed import check_strategy, resolve_backend


def is_worker() -> bool:
    """Whether this process was started by torchrun (`tunesmith train --nproc`, or torchrun by hand)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def worker_rank() -> int:
    """This worker's global rank (0 writes the run folder and the registry)."""
    return int(os.environ["RANK"])


@dataclass(frozen=True)
class LaunchSettings:
    """Where the processes of one job run: `nproc` on each of `nnodes` machines."""

    nproc: int
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None on one machine: torchrun picks a free port

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes


def check_launch(settings: LaunchSettings, spec: TrainSpec) -> None:
    """Raise `ConfigError` naming the flag for a launch that cannot work, before any process starts."""
    device = (
        "cuda" if torch.cuda.is_available() else "cpu"
    )  # `default_device`, without importing transformers
    if settings.nproc < 1:
        raise ConfigError(f"--nproc {settings.nproc}: give at least 1 process per machine")
    if settings.nnodes < 1:
        raise ConfigError(f"--nnodes {settings.nnodes}: give at least 1 machine")
    if not 0 <= settings.node_rank < settings.nnodes:
        raise ConfigError(
            f"--node-rank {settings.node_rank}: must be 0 to {settings.nnodes - 1} for --nnodes {settings.nnodes}"
        )
    if settings.nnodes > 1 and settings.master_port is None:
        raise ConfigError(
            "--nnodes above 1 needs --master-addr and --master-port (the same on every machine)"
        )
    if spec.method not in ("sft", "dpo"):
        raise ConfigError(f"--nproc trains sft and dpo; method {spec.method} runs in one process for now")
    check_strategy(spec)
    backend = resolve_backend(spec.distributed.backend, device)
    if backend == "nccl" and settings.nproc > torch.cuda.device_count():
        raise ConfigError(
            f"--nproc {settings.nproc}: nccl runs one process per GPU and this machine has "
            f"{torch.cuda.device_count()}"
        )
    if settings.master_port is not None and settings.node_rank == 0:
        _check_port_free(settings.master_port)


def _check_port_free(port: int) -> None:
    """Rank 0's machine serves the rendezvous on `port`: refuse one another program holds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", port))
        except OSError as error:
            raise ConfigError(
                f"--master-port {port} is in use on this machine ({error.strerror}); pick a free port"
            ) from error


def launch_training(spec: TrainSpec, resume: Path | None, settings: LaunchSettings, args: list[str]) -> None:
    """Run `tunesmith train` (`spec`, or the run folder `resume`) in `settings.nproc` processes here.

    `args` are the worker's other `tunesmith train` options (--json, --report-to ...). Blocks until every
    process ends; raises `ConfigError` naming the failed ranks when one fails.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    with tempfile.TemporaryDirectory(prefix="tunesmith-launch-") as folder:
        job = ["--resume", str(resume)]
        if resume is None:  # the spec as resolved here (flags and config merged), read back by every worker
            config = Path(folder) / "train.yaml"
            config.write_text(yaml.safe_dump({"train": spec.model_dump(mode="json")}), encoding="utf-8")
            job = ["--config", str(config)]
        launcher = [
            f"--nnodes={settings.nnodes}", f"--nproc-per-node={settings.nproc}",
            f"--node-rank={settings.node_rank}", "--max-restarts=0",
        ]  # fmt: skip
        if settings.master_port is None:
            launcher.append("--standalone")
        else:
            launcher += [f"--master-addr={settings.master_addr}", f"--master-port={settings.master_port}"]
        command = get_args_parser().parse_args([*launcher, "-m", "tunesmith", "train", *job, *args])
        try:
            run(command)
        except ChildFailedError as error:
            ranks = ", ".join(str(rank) for rank in sorted(error.failures))
            raise ConfigError(
                f"training failed in process(es) {ranks}; the first error is above"
                + ("" if resume is None else f"; resume with `tunesmith train --resume {resume} --nproc ...`")
            ) from None
