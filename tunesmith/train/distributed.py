"""Training across processes and machines: what the loop asks of its peers.

Owns: joining the process group in a worker (`join_process_group`), the strategy and backend a
multi-process run uses, and `Replicas`, the few things the
loop (`tunesmith.train.loop`) and the recipe (`tunesmith.train.sft`) ask of the other processes: the shard
of a step's examples this process trains on, totals over every process, the summed gradients, and rank
0's value of anything a process measured or chose for itself. `ALONE` answers for one process, as if no
other existed, so the one-process path runs exactly as it did before. Does not own: starting the
processes (`tunesmith.train.launch`), the loop, the objectives, or the run folder (only rank 0 writes it:
`RunDir.writes`).

Data parallel with an explicit all-reduce, not `DistributedDataParallel`: the loop runs the decoder and
the loss head outside the model's `forward` (`TrainingModel.hidden_states`, `linear_cross_entropy`), which
DDP's reducer needs to see; a process's share of a step packs into as many passes as it needs, and DDP
needs every process to call backward equally often; DDP averages gradients where a token-weighted loss
needs their sum. So each process takes its shard of the same global step (a function of (seed, step)),
divides its summed loss by the step's loss tokens over every process, runs its passes, and one
all-reduce per step (in buckets, the loss sum riding along) sums the trainable gradients: the gradient of
the global step's token mean, as one process computes it, to rounding. LoRA gradients are a few MB, so
overlapping the all-reduce with backward would save nothing worth DDP's constraints. Full fine-tuning
can run the same way (strategy ddp, the all-reduce in 64 MB buckets); by default (auto) it shards the
weights, gradients and optimizer state across processes instead (`tunesmith.train.fsdp`, FSDP2), for a
model that does not fit one device. DeepSpeed ZeRO-3 is not built.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch

from tunesmith.config import ConfigError, TrainSpec
from tunesmith.train.checkpoint import load_trainable_state, trainable_state
from tunesmith.train.rundir import RunDir

if TYPE_CHECKING:
    from tunesmith.train.plan import MemoryEstimate, ModelShape

T = TypeVar("T")
_BUCKET_ELEMENTS = 1 << 24  # 64 MB of fp32 gradients per all-reduce call


class Replicas(Protocol):
    """The other processes of a data-parallel run, as the loop and the recipe need them."""

    @property
    def rank(self) -> int: ...

    @property
    def world_size(self) -> int: ...

    @property
    def shards_weights(self) -> bool:
        """Whether each process holds only a shard of the weights (fsdp): then saving and loading them
        are collectives every process joins."""
        ...

    def shard(self, items: list[T]) -> list[T]:
        """This process's share of `items` (the same list in every process)."""
        ...

    def total(self, *values: float) -> list[float]:
        """Each of `values` summed over every process."""
        ...

    def sum_gradients(self, parameters: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        """Sum `parameters`' gradients over every process in place; returns `loss` summed the same way."""
        ...

    def agree(self, value: T) -> T:
        """Rank 0's `value` (picklable), in every process."""
        ...

    def on_main(self, compute: Callable[[], T]) -> T:
        """`compute()` run by rank 0 alone, its result in every process."""
        ...

    def gather(self, value: T) -> list[T]:
        """Every process's `value`, by rank."""
        ...

    def lockstep(self, passes: int) -> int:
        """Passes this process adds (their loss weighted 0) to its `passes` so every process runs as many.

        Sharded weights are gathered in every forward, a collective each process must join; replicated
        weights need no padding (0).
        """
        ...

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """`model`'s trainable weights whole, by name, in rank 0 (every process calls it; others get {})."""
        ...

    def load_trainable_state(self, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        """Load rank 0's `tensors` (from `trainable_state`) into every process's `model`."""
        ...

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimizer's state whole, in rank 0 (every process calls it)."""
        ...

    def load_optimizer_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        """Load rank 0's `state` (from `optimizer_state`) into every process's optimizer."""
        ...


class _WholeModel:
    """Every process holds the whole model: each answers for itself, as one process does (rank 0's weights
    are every process's, their gradients summed and their updates equal)."""

    def lockstep(self, passes: int) -> int:
        return 0

    def trainable_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return trainable_state(model)

    def load_trainable_state(self, model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        load_trainable_state(model, tensors)

    def optimizer_state(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        optimizer.load_state_dict(state)


class _Alone(_WholeModel):
    """One process: every question answers itself."""

    rank = 0
    world_size = 1
    shards_weights = False

    def shard(self, items: list[T]) -> list[T]:
        return items

    def total(self, *values: float) -> list[float]:
        return list(values)

    def sum_gradients(self, parameters: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        return loss

    def agree(self, value: T) -> T:
        return value

    def on_main(self, compute: Callable[[], T]) -> T:
        return compute()

    def gather(self, value: T) -> list[T]:
        return [value]


ALONE: Replicas = _Alone()


@dataclass(frozen=True)
class ProcessGroup(_WholeModel):
    """This process in a torch.distributed group: gloo on CPU, nccl on CUDA (`device` holds its tensors)."""

    rank: int
    world_size: int
    device: str
    shards_weights = False  # a class constant, not a field: every process holds the whole model

    def shard(self, items: list[T]) -> list[T]:
        # A contiguous share, not every n-th: where a share is whole micro-batches, a process packs and
        # runs exactly the passes one process would, so with two processes the summed gradient is bitwise
        # the one process's (a + b == b + a); with more it differs in rounding (the all-reduce's order).
        count = len(items)
        return items[self.rank * count // self.world_size : (self.rank + 1) * count // self.world_size]

    def total(self, *values: float) -> list[float]:
        import torch.distributed as dist

        # float64 holds token counts exactly (below 2**53) and loss sums to fp32's precision and beyond.
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return [float(value) for value in tensor.tolist()]

    def sum_gradients(self, parameters: list[torch.nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        # A process whose shard was empty (the short last step of an epoch) has no gradients: zeros.
        for parameter in parameters:
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        tensors = [parameter.grad for parameter in parameters if parameter.grad is not None]
        summed_loss = loss.detach().reshape(1).to(tensors[0].dtype)
        for bucket in _buckets([*tensors, summed_loss]):
            flat = torch.cat([tensor.reshape(-1) for tensor in bucket])
            dist.all_reduce(flat)
            offset = 0
            for tensor in bucket:
                tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
                offset += tensor.numel()
        return summed_loss.reshape(()).to(loss.dtype)

    def agree(self, value: T) -> T:
        import torch.distributed as dist

        holder: list[Any] = [value]
        dist.broadcast_object_list(holder, src=0)
        result: T = holder[0]
        return result

    def on_main(self, compute: Callable[[], T]) -> T:
        import torch.distributed as dist

        holder: list[Any] = [compute() if self.rank == 0 else None]
        dist.broadcast_object_list(holder, src=0)
        result: T = holder[0]
        return result

    def gather(self, value: T) -> list[T]:
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


def _buckets(tensors: list[torch.Tensor]) -> Iterator[list[torch.Tensor]]:
    """`tensors` in order, grouped into runs of about `_BUCKET_ELEMENTS` (one all-reduce each)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for tensor in tensors:
        bucket.append(tensor)
        size += tensor.numel()
        if size >= _BUCKET_ELEMENTS:
            yield bucket
            bucket, size = [], 0
    if bucket:
        yield bucket


# ---------------------------------------------------------------------- in a worker


def resolve_backend(backend: str, device: str) -> str:
    """The backend `distributed.backend` names on `device`: auto is nccl on CUDA, gloo on CPU."""
    if backend == "auto":
        return "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl" and not device.startswith("cuda"):
        raise ConfigError("train.distributed.backend: nccl needs CUDA GPUs; use gloo (or auto) on CPU")
    return backend


def check_strategy(spec: TrainSpec) -> str:
    """The strategy a multi-process run of `spec` uses (auto: ddp for LoRA, fsdp for full fine-tuning);
    a clear error for one that cannot run here."""
    strategy = spec.distributed.strategy
    if strategy == "deepspeed":
        raise ConfigError(
            "train.distributed.strategy: deepspeed (ZeRO-3) is not part of tunesmith's install: `pip install "
            "deepspeed` and run it through its own launcher; tunesmith shards full fine-tuning with fsdp"
        )
    if strategy == "auto":
        strategy = "fsdp" if spec.tuning == "full" else "ddp"
    if strategy == "fsdp" and (spec.eval_metrics or spec.compile):
        raise ConfigError(
            "train.distributed.strategy: full fine-tuning across processes shards the weights (fsdp), which "
            f"runs without {'eval_metrics' if spec.eval_metrics else 'compile'}; drop it, or set strategy: "
            "ddp to hold the whole model in every process"
        )
    return strategy


@contextmanager
def join_process_group(backend: str, device: str) -> Iterator[ProcessGroup]:
    """Join the group torchrun set up (its env variables); leave it on the way out."""
    import torch.distributed as dist

    name = resolve_backend(backend, device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if name == "nccl":
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    dist.init_process_group(name)
    try:
        yield ProcessGroup(dist.get_rank(), dist.get_world_size(), device)
    finally:
        dist.destroy_process_group()


def share_run(replicas: Replicas, open_main: Callable[[], RunDir]) -> RunDir:
    """The run folder rank 0 opens (`open_main`); the other processes get a view of it that writes nothing."""
    if replicas.rank == 0:
        run = open_main()
        replicas.agree((str(run.path), run.run_id))
        return run
    path, run_id = replicas.agree(("", ""))
    return RunDir(Path(path), run_id, writes=False)


def device_memory(memory: MemoryEstimate, strategy: str, processes: int, shape: ModelShape) -> MemoryEstimate:
    """Peak bytes on each device when `processes` processes train one step as `memory` estimates it for one.

    ddp: every process holds everything (weights, optimizer state, its own passes' activations), plus a
    bucket of gradients flattened to be summed (`ProcessGroup.sum_gradients`).
    fsdp: weights, gradients and AdamW moments are split `processes` ways (`tunesmith.train.fsdp`); on top
    of its shard a process holds the root's weights gathered whole (embeddings, head) and two decoder
    layers' (the one running and the next, prefetched), in fp32 (`tunesmith.train.fsdp`), and those
    layers' unsharded gradients before they are reduce-scattered. Activations are each process's own
    passes', as in ddp.
    """
    if strategy == "ddp":
        bucket = min(
            memory.trainable_state // 4, _BUCKET_ELEMENTS * 4
        )  # fp32 gradients: a quarter of the state
        return replace(memory, overhead=memory.overhead + bucket)
    assert strategy == "fsdp"  # `check_strategy` refuses the others
    width = 4  # fp32 weights gathered
    root = shape.vocab * shape.hidden
    layer = (shape.parameters - root) // max(1, shape.layers)
    gathered = (root + 2 * layer) * width
    return replace(
        memory,
        weights=math.ceil(memory.weights / processes) + gathered,
        trainable_state=math.ceil(memory.trainable_state / processes),
        overhead=memory.overhead + 2 * layer * width,
    )
