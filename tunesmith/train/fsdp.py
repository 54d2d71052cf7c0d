"""Full fine-tuning with sharded weights across processes: FSDP2 (`torch.distributed.fsdp.fully_shard`).

Owns: sharding a `TrainingModel` (each decoder layer, then a root over the rest: embeddings, final norm,
output head), the mixed-precision policy (fp32 weights and gradients, the matmuls under the same bf16
autocast as one process where the hardware runs bf16), and `ShardedGroup`, the `Replicas` of a
sharded run: gradients arrive summed by FSDP's reduce-scatter (its divide factor set to 1: the loop
divides by the step's tokens over every process), every process runs as many passes as the busiest
(a forward gathers each layer's weights, a collective all must join), and weights and optimizer state
are gathered whole to rank 0 to be saved, and spread back from rank 0's copy when loaded, so a
checkpoint has the same files as one process's and resumes exactly with the same number of processes.
Does not own: the loop, the objectives, the launch (`tunesmith.train.distributed`).

The loop runs the decoder and the loss head outside the model's `forward`. So the root that FSDP shards
is `_Body`, whose `forward` is the decoder's: its pre-forward hook gathers the root's weights (the head
among them), FSDP keeps a root's weights gathered after its forward (backward needs them at once), and
the head is read after the forward (`TrainingModel.head_weight` looks it up each time) while gathered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from tunesmith.models.loading import load_model
from tunesmith.train.checkpoint import load_trainable_state
from tunesmith.train.distributed import ProcessGroup, Replicas
from tunesmith.train.model import TrainingModel

_ROOT = "model."  # the `_Body` attribute holding the model: stripped from the names saved


class _Body(nn.Module):
    """The model's decoder as a module whose `forward` FSDP hooks: the root holding the whole model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: Any) -> Any:
        decoder: nn.Module = self.model.get_decoder()  # type: ignore[operator]
        return decoder(**inputs)


def shard_training_model(trained: TrainingModel, replicas: Replicas) -> tuple[TrainingModel, ShardedGroup]:
    """Shard `trained`'s weights over the processes of `replicas` (a process group); every process calls it.

    Returns the model whose `decoder` is the sharded root, and the `Replicas` the loop trains it with.
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    assert isinstance(replicas, ProcessGroup)  # a worker's group: `tunesmith train --nproc`
    # fp32 weights gathered, bf16 only inside the autocast `TrainingModel.hidden_states` opens, as one
    # process trains. Gathering bf16 weights (FSDP's param_dtype) halves the traffic but makes the residual
    # stream bf16 too: 0.023 higher loss after 8 steps of the embedded model (benchmarks/RESULTS.md).
    policy = MixedPrecisionPolicy()
    body = _Body(trained.model)
    for layer in trained.model.get_decoder().layers:
        fully_shard(layer, mp_policy=policy)
    fully_shard(body, mp_policy=policy)
    for module in body.modules():
        if isinstance(module, FSDPModule):
            # Sum, not mean: the loop already divided by the step's tokens over every process. Plain SUM
            # collectives, as gloo has no pre-multiplied sum.
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return replace(trained, decoder=body), ShardedGroup(replicas, body)


@dataclass(frozen=True)
class ShardedGroup:
    """The processes of a sharded run, as the loop asks of them (`tunesmith.train.distributed.Replicas`)."""

    group: ProcessGroup
    root: nn.Module  # the sharded `_Body`: state dicts are taken from it

    shards_weights = True

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def world_size(self) -> int:
        return self.group.world_size

    def shard(self, items: list[Any]) -> list[Any]:
        return self.group.shard(items)

    def total(self, *values: float) -> list[float]:
        return self.group.total(*values)

    def sum_gradients(self, parameters: list[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        # The reduce-scatter after each backward already summed the gradients: only the loss is left.
        summed = loss.detach().reshape(1).to(torch.float32)
        dist.all_reduce(summed)
        return summed.reshape(()).to(loss.dtype)

    def agree(self, value: Any) -> Any:
        return self.group.agree(value)

    def on_main(self, compute: Any) -> Any:
        return self.group.on_main(compute)

    def gather(self, value: Any) -> list[Any]:
        return self.group.gather(value)

    def lockstep(self, passes: int) -> int:
        return max(self.group.gather(passes)) - passes

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = get_model_state_dict(self.root, options=_options())
        names = {name for name, _ in self.root.named_parameters()}  # a tied head once, as one process saves
        return {
            name.removeprefix(_ROOT): tensor
            for name, tensor in state.items()
            if name in names and isinstance(tensor, torch.Tensor)
        }

    def load_trainable_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        state: dict[str, Any] = {_ROOT + name: tensor for name, tensor in tensors.items()}
        set_model_state_dict(self.root, state, options=_options(broadcast=True, strict=False))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(self.root, optimizer, options=_options())

    def load_optimizer_state(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
    ) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(self.root, optimizer, state, options=_options(broadcast=True))


def _options(*, broadcast: bool = False, strict: bool = True) -> Any:
    """Whole tensors, on the CPU of rank 0 (others get none); loading spreads rank 0's copy."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(
        full_state_dict=True, cpu_offload=True, broadcast_from_rank0=broadcast, strict=strict
    )


def gather_for_saving(trained: TrainingModel, model_path: str, replicas: ShardedGroup) -> TrainingModel:
    """The trained weights gathered whole into a plain copy of the model in rank 0, to save as one
    process's full fine-tune is saved (every process calls it; the others get `trained` back)."""
    weights = replicas.trainable_state(trained.model)
    if replicas.rank != 0:
        return trained
    model = load_model(model_path, dtype=torch.float32)
    load_trainable_state(model, weights)
    return replace(trained, model=model, decoder=model.get_decoder())
