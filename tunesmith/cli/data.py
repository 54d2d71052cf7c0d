"""`tunesmith data`: prepare raw data (or served answers' feedback) into a versioned dataset, inspect it,
and look at one example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tunesmith.cli.common import UsageError, console, err_console, print_json
from tunesmith.cli.options import PREPARE_FLAGS, spec_flags
from tunesmith.config import DEFAULT_MODEL, DataFormat, PrepareSpec

app = typer.Typer(help="Prepare and inspect training data.")


@app.command("prepare")
@spec_flags(PrepareSpec, PREPARE_FLAGS)
def prepare(
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file with a `data:` section."),
    no_near_dedup: bool = typer.Option(False, "--no-near-dedup", help="Skip near-duplicate removal."),
    no_clean: bool = typer.Option(
        False, "--no-clean", help="Skip every cleaning step (unicode, HTML, whitespace, boilerplate)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    *,
    flags: dict[str, Any],
) -> None:
    """Clean, deduplicate, redact, validate and split raw data into a versioned dataset with a report.

    Writes train.jsonl, val.jsonl, test.jsonl, report.json, report.html and dataset.json (content hash and
    lineage) to --out, and records the dataset in the registry. `tunesmith train --data DIR` uses it.
    """
    from tunesmith.config import build_spec, default_database_url, load_config_file
    from tunesmith.data.prepare import prepare_data
    from tunesmith.registry.store import Registry

    file_section = load_config_file(config).data if config else None
    for flag, key in (("INPUT...", "inputs"), ("--out", "out")):
        if flags[key] is None and not (file_section or {}).get(key):
            raise UsageError(
                f"give {flag} (or data.{key} in a --config file); see `tunesmith data prepare --help`"
            )
    if no_clean:
        flags = {**flags, "fix_unicode": False, "strip_html": False, "normalize_whitespace": False,
                 "boilerplate_share": 0.0}  # fmt: skip
    spec = build_spec(PrepareSpec, file_section, flags)
    if no_near_dedup:
        spec.near_dup_threshold = None
    registry = Registry(default_database_url()).connect()
    with err_console.status("preparing") as status:
        result = prepare_data(spec, registry=registry, progress=lambda step: status.update(f"{step}…"))
    summary = _summary(result.report, result.out)
    if json_output:
        print_json(summary)
        return
    _print_summary(summary)


@app.command("from-feedback")
def from_feedback(
    out: Path = typer.Option(
        ..., "--out", "-o", help="Folder for the datasets: sft/, dpo/, kto/ as there are rows."
    ),
    deployment: str | None = typer.Option(
        None, "--deployment", help="Feedback on what this deployment served."
    ),
    adapter: str | None = typer.Option(
        None, "--adapter", help="Feedback on answers of any version of this adapter."
    ),
    good_rating: int = typer.Option(
        4, "--good-rating", help="Ratings at or above this are good (KTO label true)."
    ),
    bad_rating: int = typer.Option(
        2, "--bad-rating", help="Ratings at or below this are bad (KTO label false)."
    ),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="Target model: its tokenizer counts tokens."
    ),
    pii: str = typer.Option(
        "redact", "--pii", help="Personal data: report, redact or drop (as data prepare)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Build versioned datasets from the request log and its feedback: DPO pairs, SFT rows, KTO rows.

    A preference between two answers becomes a DPO pair; a correction an SFT row and a DPO pair (the
    correction over the answer); thumbs and ratings KTO rows. Each kind is prepared as `data prepare`
    does (PII, dedupe, a split grouped by request) into OUT/dpo, OUT/sft, OUT/kto, and every row keeps
    the request and feedback ids it came from (`source_ids`).

    Examples:
      tunesmith data from-feedback --deployment support --out data/feedback-1
      tunesmith train --method dpo --data data/feedback-1/dpo --init-adapter RUN_ID --name support
    """
    from tunesmith.config import default_database_url
    from tunesmith.data.feedback import feedback_rows, prepare_feedback_dataset
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry

    if (deployment is None) == (adapter is None):
        raise UsageError("give one of --deployment NAME or --adapter NAME")
    registry = Registry(default_database_url()).connect()
    requests, feedback = ServingStore(registry).feedback_with_requests(deployment=deployment, adapter=adapter)
    if not feedback:
        raise UsageError(
            f"no feedback on {'deployment ' + deployment if deployment else 'adapter ' + str(adapter)}"
        )
    rows = feedback_rows(requests, feedback, good_rating=good_rating, bad_rating=bad_rating)
    with err_console.status("preparing"):
        results = prepare_feedback_dataset(rows, out, model=model, pii=pii, registry=registry)
    summary = {
        "feedback": len(feedback),
        "datasets": {
            kind: {"out": str(r.out), "hash": r.hash, "splits": r.splits} for kind, r in results.items()
        },
        "unused": rows.unused,
    }
    if json_output:
        print_json(summary)
        return
    for kind, result in results.items():
        console.print(f"[bold]{kind}[/] {result.out}: {result.splits} (hash {result.hash[:12]})")
    for line in rows.unused:
        err_console.print(f"[yellow]unused:[/] {line}", highlight=False)


@app.command("inspect")
def inspect(
    directory: Path = typer.Argument(..., help="A folder written by `tunesmith data prepare`."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Summarise a prepared dataset: hash, splits, what each step removed, tokens and cost estimate."""
    from tunesmith.data.output import inspect_dataset

    summary = inspect_dataset(directory)
    if json_output:
        print_json(summary)
        return
    _print_summary(summary)


def _summary(report: dict[str, Any], out: Path) -> dict[str, Any]:
    from tunesmith.data.output import inspect_dataset

    return {**inspect_dataset(out), "seconds": report["seconds"], "report": str(out / "report.html")}


def _print_summary(summary: dict[str, Any]) -> None:
    from tunesmith.data.report import format_dollars, format_hours

    splits = ", ".join(f"{name} {count:,}" for name, count in summary["splits"].items())
    console.print(
        f"[bold]{summary['path']}[/]  {summary['kind']}  hash [cyan]{summary['hash'][:12]}[/]  {splits}",
        highlight=False,
    )
    table = Table("step", "rows in", "rows out", "removed", "changed")
    for step in summary["steps"]:
        removed = ", ".join(f"{k}: {v:,}" for k, v in step["removed_by_reason"].items())
        changed = ", ".join(f"{k}: {v:,}" for k, v in step["changed"].items())
        table.add_row(step["name"], f"{step['rows_in']:,}", f"{step['rows_out']:,}", removed, changed)
    console.print(table)
    tokens, estimate = summary["tokens"], summary["estimate"]
    minutes = estimate["cpu_minutes"]
    here = f"{format_hours(minutes / 60)} here" if minutes is not None else "CPU time not measured"
    cheapest = min(estimate["gpus"].items(), key=lambda item: item[1]["dollars"], default=None)
    gpu = (
        f", {cheapest[0]}: {format_hours(cheapest[1]['hours'])} ≈ {format_dollars(cheapest[1]['dollars'])}"
        if cheapest
        else ""
    )
    console.print(
        f"tokens {tokens['total']:,} ({tokens['loss_share']:.0%} loss-bearing, p95 {tokens['p95']:.0f}, "
        f"max {tokens['max']:,} / context {tokens['context_length']}); training {estimate['total_tokens']:,.0f} "
        f"tokens: {here}{gpu}",
        highlight=False,
    )
    if "report" in summary:
        console.print(f"report: {summary['report']}  ({summary['seconds']:.1f} s)", highlight=False)


@app.command("show")
def show(
    file: Path = typer.Argument(
        ...,
        help="Data file (JSONL, JSON, CSV or Parquet) or a prepared dataset folder (its train split).",
        exists=False,
    ),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", "-m", help="Base model whose chat template renders it."
    ),
    index: int = typer.Option(0, "--index", "-i", help="Which example (0-based)."),
    data_format: DataFormat | None = typer.Option(
        None, "--format", help="Example form; detected when unset."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print tokens and their loss flags as JSON."),
) -> None:
    """Print one example rendered with the model's chat template, loss-bearing tokens highlighted.

    Tokens the model learns from (assistant turns, end-of-turn token included) are shown in green on a
    dark background; everything else is context the loss ignores.
    """
    from tunesmith.data.ingest import is_prepared_dataset, load_examples, load_split
    from tunesmith.data.render import IGNORE_INDEX, render_example
    from tunesmith.models.loading import load_tokenizer, resolve_model

    examples = load_split(file, "train")[0] if is_prepared_dataset(file) else load_examples(file, data_format)
    if not 0 <= index < len(examples):
        raise typer.BadParameter(f"--index must be in 0..{len(examples) - 1}")
    tokenizer = load_tokenizer(resolve_model(model))
    rendered = render_example(tokenizer, examples[index], max_len=1 << 20)
    # targets[t] is the token after t, so token t+1 is learned when targets[t] is set.
    learned = [False] + [target != IGNORE_INDEX for target in rendered.targets[:-1]]
    pieces = [str(tokenizer.decode([token])) for token in rendered.input_ids]
    if json_output:
        print_json(
            {
                "source": rendered.source,
                "tokens": [
                    {"id": i, "text": p, "loss": flag}
                    for i, p, flag in zip(rendered.input_ids, pieces, learned, strict=True)
                ],
                "num_tokens": len(pieces),
                "num_loss_tokens": sum(learned),
            }
        )
        return
    text = Text()
    for piece, flag in zip(pieces, learned, strict=True):
        text.append(piece, style="bold green on grey15" if flag else "dim")
    title = f"{rendered.source}: {len(pieces)} tokens, {sum(learned)} with loss"
    console.print(
        Panel(text, title=title, subtitle="[bold green on grey15]learned[/]  [dim]context (no loss)[/]")
    )
