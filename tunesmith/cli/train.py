"""`tunesmith train`: supervised fine-tuning from a config file and/or flags."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
import yaml
from rich.table import Table

from tunesmith.cli.common import UsageError, console, err_console, print_json
from tunesmith.config import TrainSpec, build_train_spec, load_config_file

if TYPE_CHECKING:
    from tunesmith.registry.store import Registry


def train(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file with a `train:` section; flags override it."
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Training file (JSONL, JSON, CSV, Parquet) or a `tunesmith data prepare` folder."
    ),
    val_data: Path | None = typer.Option(
        None, "--val-data", help="Validation file (val loss, early stopping, best checkpoint)."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Base model: catalog name, Hugging Face id or directory."
    ),
    method: str | None = typer.Option(None, "--method", help="lora (default) or full."),
    epochs: float | None = typer.Option(None, "--epochs", help="Passes over the data (default 3)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Examples per micro-batch (default 8)."),
    grad_accum: int | None = typer.Option(
        None, "--grad-accum", help="Micro-batches per optimizer step (default 1)."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 2e-4 LoRA, 2e-5 full)."),
    lora_r: int | None = typer.Option(None, "--lora-r", help="LoRA rank (default 16)."),
    lora_alpha: int | None = typer.Option(None, "--lora-alpha", help="LoRA alpha (default 32)."),
    lora_dropout: float | None = typer.Option(
        None,
        "--lora-dropout",
        help="Dropout on the adapter input (default 0.05; 0 trains ~25% faster on CPU).",
    ),
    max_seq_len: int | None = typer.Option(
        None, "--max-seq-len", help="Truncate examples to this many tokens."
    ),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Steps between validation passes."),
    save_every: int | None = typer.Option(None, "--save-every", help="Steps between resumable checkpoints."),
    precision: str | None = typer.Option(None, "--precision", help="auto (default), bf16 or fp32."),
    memory_limit_gb: float | None = typer.Option(
        None,
        "--memory-limit-gb",
        help="Memory the run may use (default: 90% of free GPU memory, half the RAM).",
    ),
    micro_batch_tokens: int | None = typer.Option(
        None, "--micro-batch-tokens", help="Tokens per forward/backward pass (default: the most that fit)."
    ),
    gradient_checkpointing: str | None = typer.Option(
        None, "--gradient-checkpointing", help="auto (default: only if needed to fit), on or off."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed for data order, init and dropout."),
    eval_metrics: list[str] | None = typer.Option(
        None,
        "--eval-metric",
        help="Task metric scored on a validation sample at each validation (repeatable), e.g. rouge_l, accuracy.",
    ),
    select_by: str | None = typer.Option(
        None,
        "--select-by",
        help="val_loss (default) or an --eval-metric: picks the best checkpoint, early stops.",
    ),
    name: str | None = typer.Option(
        None, "--name", help="Adapter name in the registry (default: the run id)."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run directory (default TUNESMITH_HOME/runs/<id>)."
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
) -> None:
    """Fine-tune a base model on your data (LoRA by default) and record the run.

    Loss is taken only on assistant tokens. Each run gets a folder with its config, events.jsonl,
    metrics.jsonl, loss_curve.png, checkpoints and the adapter with a model card; the registry records it.

    Examples:
      tunesmith train --data train.jsonl --val-data val.jsonl --epochs 2
      tunesmith train --config configs/quickstart.yaml --max-steps 20 --json
      tunesmith train --resume run-20261123-182501-3fa9
      tunesmith train --data train.jsonl --method full --dry-run   # will it fit, how long?
    """
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry
    from tunesmith.train.rundir import EventType, RunEvent
    from tunesmith.train.sft import train_sft

    registry = Registry(default_database_url()).connect()
    overrides = {
        "data": data, "val_data": val_data, "model": model, "method": method, "epochs": epochs,
        "max_steps": max_steps, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr,
        "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout, "max_seq_len": max_seq_len, "eval_every": eval_every,
        "save_every": save_every, "precision": precision, "seed": seed, "name": name, "out": out,
        "memory_limit_gb": memory_limit_gb, "micro_batch_tokens": micro_batch_tokens,
        "gradient_checkpointing": gradient_checkpointing, "eval_metrics": eval_metrics or None,
        "select_by": select_by,
    }  # fmt: skip
    resume_dir: Path | None = None
    if resume is not None:
        resume_dir = registry.find_run_dir(resume)
        given = [key for key, value in overrides.items() if value is not None]
        if given or config is not None:
            raise UsageError(
                f"--resume continues a run with its saved config; drop {', '.join(given) or '--config'}"
            )
        section = yaml.safe_load((resume_dir / "config.yaml").read_text(encoding="utf-8"))["train"]
        spec = build_train_spec(section, {})
    else:
        section = load_config_file(config).train if config else None
        spec = build_train_spec(section, overrides)
    if dry_run:
        _print_plan(spec, registry, json_output)
        return
    record = registry.run_listener(spec.name)

    def listen(event: RunEvent) -> None:
        record(event)
        if event.type in (EventType.warning, EventType.early_stopped):  # e.g. truncated examples
            err_console.print(f"[yellow]{event.type.value}:[/] {event.message}", highlight=False)

    result = train_sft(spec, listener=listen, resume=resume_dir, progress=True)
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
    console.print(f"run folder: {result.run_dir}")
    err_console.print(f"next: tunesmith eval --model {result.run_id} --data TEST_FILE")


def _print_plan(spec: TrainSpec, registry: Registry, json_output: bool) -> None:
    from tunesmith.train.plan import plan_training

    plan = plan_training(spec, registry.measured_throughput)
    if json_output:
        print_json(plan.to_dict())
        return
    layout, memory = plan.layout, plan.layout.memory_gb
    table = Table(
        title=f"plan: {plan.method} on {plan.model} ({plan.device}, {plan.precision})", show_header=False
    )
    table.add_row("parameters", f"{plan.parameters:,} ({plan.trainable_parameters:,} trainable)")
    table.add_row("data", f"{plan.examples:,} examples, {plan.tokens_per_epoch:,} tokens/epoch "
                  f"({plan.loss_tokens_per_epoch:,} with loss)")  # fmt: skip
    table.add_row("steps", f"{plan.steps:,} ({plan.total_tokens:,} tokens)")
    table.add_row(
        "memory (GB)",
        f"{memory['total']} of {layout.budget_gb} allowed: weights {memory['weights']}, optimizer "
        f"{memory['trainable_state']}, activations {memory['activations']}, loss {memory['loss_buffers']}, "
        f"allocator {memory['overhead']}",
    )
    table.add_row(
        "step layout",
        f"passes of {layout.pass_tokens:,} tokens, gradient checkpointing "
        f"{'on' if layout.gradient_checkpointing else 'off'}, fused layers "
        f"{'on' if layout.fused_layers else 'off'}",
    )
    table.add_row("speed", f"~{plan.tokens_per_second:,.0f} tokens/s ({plan.throughput_source})")
    table.add_row("time", f"~{plan.estimated_seconds / 60:,.1f} min")
    console.print(table)
    for tip in plan.suggestions:
        err_console.print(f"[yellow]suggestion:[/] {tip}", highlight=False)
    if not layout.fits:
        raise typer.Exit(1)
