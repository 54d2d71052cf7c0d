"""`tunesmith train`: supervised fine-tuning or preference tuning from a config file and/or flags."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from rich.table import Table

from tunesmith.cli.common import UsageError, console, err_console, print_json
from tunesmith.cli.options import TRAIN_FLAGS, spec_flags
from tunesmith.config import TrainSpec, build_spec, load_config_file
from tunesmith.train.validation import ValidationSource

if TYPE_CHECKING:
    from collections.abc import Callable

    from tunesmith.registry.store import Registry
    from tunesmith.train.records import TrainResult
    from tunesmith.train.rundir import RunEvent


@spec_flags(TrainSpec, TRAIN_FLAGS)
def train(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file with a `train:` section; flags override it."
    ),
    resume: str | None = typer.Option(
        None,
        "--resume",
        help="Resume a killed or cancelled run (its directory or id) from its last checkpoint.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Estimate tokens, memory, step layout and time, suggest settings that fit, and stop.",
    ),
    json_output: bool = typer.Option(
        False, "--json", help="Print the run summary (or the --dry-run plan) as one JSON object on stdout."
    ),
    report_to: str | None = typer.Option(
        None,
        "--report-to",
        help="Copy the finished run into experiment trackers: mlflow, tensorboard, wandb (comma-separated).",
    ),
    nproc: int | None = typer.Option(
        None,
        "--nproc",
        help="Train in this many processes on this machine through torchrun (one per GPU with nccl; gloo on "
        "CPU), each on its share of every step (the distributed: section). With --dry-run: memory per device.",
        rich_help_panel="Several processes",
    ),
    nnodes: int = typer.Option(
        1,
        "--nnodes",
        help="Machines in the job (run the same command on each).",
        rich_help_panel="Several processes",
    ),
    node_rank: int = typer.Option(
        0,
        "--node-rank",
        help="This machine's index, 0 to nnodes-1 (0 writes the run folder).",
        rich_help_panel="Several processes",
    ),
    master_addr: str = typer.Option(
        "127.0.0.1",
        "--master-addr",
        help="Address of machine 0, where the processes meet.",
        rich_help_panel="Several processes",
    ),
    master_port: int | None = typer.Option(
        None,
        "--master-port",
        help="Free port on machine 0 (needed with --nnodes; one machine: picked for you).",
        rich_help_panel="Several processes",
    ),
    *,
    flags: dict[str, Any],
) -> None:
    """Fine-tune a base model on your data (LoRA by default), or preference-tune it, and record the run.

    sft takes its loss on assistant tokens only; dpo and orpo train on preference pairs, kto on answers
    rated good or bad. Each run gets a folder with its config, events.jsonl, metrics.jsonl,
    loss_curve.png, checkpoints and the adapter with a model card; the registry records it.

    Examples:
      tunesmith train --data train.jsonl --val-data val.jsonl --epochs 2
      tunesmith train --config configs/quickstart.yaml --max-steps 20 --json
      tunesmith train --resume run-20261123-182501-3fa9
      tunesmith train --data train.jsonl --tuning full --dry-run   # will it fit, how long?
      tunesmith train --method dpo --data pairs.jsonl --init-adapter run-20261123-182501-3fa9
      tunesmith train --config configs/quickstart.yaml --nproc 2   # two processes (torchrun)
    """
    # The launching process of a --nproc run imports no trainer (transformers): its processes do.
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry
    from tunesmith.train.launch import LaunchSettings, check_launch, is_worker, launch_training, worker_rank
    from tunesmith.train.trackers import parse_trackers

    trackers = parse_trackers(report_to or "")

    # The other processes of a --nproc run leave the registry to process 0 (their --resume is a folder).
    follower = is_worker() and worker_rank() > 0
    registry = Registry(default_database_url()) if follower else Registry(default_database_url()).connect()
    given = [key for key, value in flags.items() if value is not None]
    resume_dir: Path | None = None
    if resume is not None:
        resume_dir = registry.find_run_dir(resume)
        if given or config is not None:
            raise UsageError(
                f"--resume continues a run with its saved config; drop {', '.join(given) or '--config'}"
            )
        section = yaml.safe_load((resume_dir / "config.yaml").read_text(encoding="utf-8"))["train"]
        spec = build_spec(TrainSpec, section, {})
    else:
        section = load_config_file(config).train if config else None
        spec = build_spec(TrainSpec, section, flags)
        if spec.init_adapter is not None and not spec.init_adapter.is_dir():  # a run id: its adapter
            spec.init_adapter = registry.find_run_dir(str(spec.init_adapter)) / "adapter"
    launch = LaunchSettings(1 if nproc is None else nproc, nnodes, node_rank, master_addr, master_port)
    if dry_run:
        _print_plan(spec, registry, json_output, launch.world_size)
        return
    if (nproc is not None or nnodes > 1) and not is_worker():
        check_launch(launch, spec)
        worker_options = ["--json"] * json_output + (["--report-to", report_to] if report_to else [])
        launch_training(spec, resume_dir, launch, worker_options)  # process 0 prints the summary
        return
    if is_worker():
        _train_in_worker(spec, resume_dir, registry, json_output, trackers)
        return
    from tunesmith.train.dpo import train_dpo
    from tunesmith.train.kto import train_kto
    from tunesmith.train.orpo import train_orpo
    from tunesmith.train.sft import train_sft

    trainers = {"sft": train_sft, "dpo": train_dpo, "kto": train_kto, "orpo": train_orpo}
    result = trainers[spec.method](
        spec, listener=_listener(registry, spec.name), resume=resume_dir, progress=True
    )
    _print_result(result, json_output, trackers)


def _train_in_worker(
    spec: TrainSpec, resume_dir: Path | None, registry: Registry, json_output: bool, trackers: list[str]
) -> None:
    """One process of a `--nproc` run (started by torchrun): sft or dpo with its peers; process 0 records
    and prints."""
    from tunesmith.models.loading import default_device
    from tunesmith.train.distributed import check_strategy, join_process_group
    from tunesmith.train.dpo import train_dpo
    from tunesmith.train.sft import train_sft

    check_strategy(spec)
    trainers = {"sft": train_sft, "dpo": train_dpo}  # `check_launch` refused the others
    with join_process_group(spec.distributed.backend, default_device()) as group:
        main = group.rank == 0
        listener = _listener(registry, spec.name) if main else None
        result = trainers[spec.method](
            spec, listener=listener, resume=resume_dir, progress=True, replicas=group
        )
    if main:
        _print_result(result, json_output, trackers)


def _listener(registry: Registry, name: str | None) -> Callable[[RunEvent], None]:
    """Record each event in the registry; print warnings as they happen."""
    from tunesmith.train.rundir import EventType

    record = registry.run_listener(name)

    def listen(event: RunEvent) -> None:
        record(event)
        if event.type in (EventType.warning, EventType.early_stopped, EventType.budget_reached):
            err_console.print(f"[yellow]{event.type.value}:[/] {event.message}", highlight=False)

    return listen


def _print_result(result: TrainResult, json_output: bool, trackers: list[str]) -> None:
    from tunesmith.train.trackers import report_run

    for tracker, where in report_run(Path(result.run_dir), trackers).items():
        err_console.print(f"reported to {tracker}: {where}", highlight=False)
    if json_output:
        print_json(result.to_dict())
        return
    console.print(
        f"[bold green]done[/] {result.run_id}: {result.steps} steps, {result.trained_tokens:,} tokens in "
        f"{result.wall_seconds:.0f}s ({result.tokens_per_second:.0f} tok/s)"
    )
    console.print(
        f"train loss {result.train_loss:.4f}"
        + (f", val loss {result.val_loss:.4f}" if result.val_loss else "")
    )
    console.print(_VALIDATED_ON[ValidationSource(result.validation)].format(count=result.num_val_examples))
    console.print(f"run folder: {result.run_dir}")
    err_console.print(f"next: tunesmith eval --model {result.run_id} --data TEST_FILE")


# What a run validated on, as the summary says it.
_VALIDATED_ON = {
    ValidationSource.val_data: "validated on {count} examples of --val-data",
    ValidationSource.prepared_split: "validated on the prepared dataset's val split ({count} examples)",
    ValidationSource.held_out: "validated on {count} examples held out of the training data (--no-val trains on all)",
    ValidationSource.none: "no validation, so no early stopping or best checkpoint: give --val-data",
}


# What a run will validate on, as the dry run says it.
_PLANNED_VALIDATION = {
    ValidationSource.val_data: "{count} examples of --val-data",
    ValidationSource.prepared_split: "the prepared dataset's val split ({count} examples)",
    ValidationSource.held_out: "{count} examples held out of the training data (--no-val trains on all)",
    ValidationSource.none: "none: no early stopping or best checkpoint",
}


def _print_plan(spec: TrainSpec, registry: Registry, json_output: bool, processes: int) -> None:
    from tunesmith.train.dry_run import plan_training

    plan = plan_training(spec, registry.measured_throughput, processes)
    if json_output:
        print_json(plan.to_dict())
        return
    layout, memory = plan.layout, plan.layout.memory_gb
    table = Table(
        title=f"plan: {plan.objective} ({plan.method}) on {plan.model} ({plan.device}, {plan.precision})",
        show_header=False,
    )
    table.add_row("parameters", f"{plan.parameters:,} ({plan.trainable_parameters:,} trainable)")
    table.add_row("data", f"{plan.examples:,} examples, {plan.tokens_per_epoch:,} tokens/epoch "
                  f"({plan.loss_tokens_per_epoch:,} with loss)")  # fmt: skip
    table.add_row("validation", _PLANNED_VALIDATION[ValidationSource(plan.validation)].format(
        count=plan.validation_examples))  # fmt: skip
    bought = f"{plan.budget} buys " if plan.budget else ""
    table.add_row("steps", f"{bought}{plan.steps:,} ({plan.epochs:g} epochs, {plan.total_tokens:,} tokens)")
    table.add_row(
        "memory (GB)",
        f"{memory['total']} of {layout.budget_gb} allowed: weights {memory['weights']}, optimizer "
        f"{memory['trainable_state']}, activations {memory['activations']}, loss {memory['loss_buffers']}, "
        f"allocator {memory['overhead']}",
    )
    for strategy, per_device in plan.memory_per_device_by_strategy_gb.items():
        chosen = " (chosen)" if strategy == plan.strategy else ""
        table.add_row(
            f"per device, {strategy} (GB)",
            f"{per_device['total']} in each of {plan.processes} processes{chosen}: weights "
            f"{per_device['weights']}, optimizer {per_device['trainable_state']}, activations "
            f"{per_device['activations']}",
        )
    table.add_row(
        "step layout",
        f"passes of {layout.pass_tokens:,} tokens, gradient checkpointing "
        f"{'on' if layout.gradient_checkpointing else 'off'}, fused layers "
        f"{'on' if layout.fused_layers else 'off'}",
    )
    table.add_row("speed", f"~{plan.tokens_per_second:,.0f} tokens/s ({plan.throughput_source})")
    reference = (
        f", of which {plan.reference_seconds / 60:,.1f} min scoring the reference"
        if plan.reference_seconds
        else ""
    )
    table.add_row("time", f"~{plan.estimated_seconds / 60:,.1f} min{reference}")
    console.print(table)
    for tip in plan.suggestions:
        err_console.print(f"[yellow]suggestion:[/] {tip}", highlight=False)
    if not layout.fits:
        raise typer.Exit(1)
