"""`tunesmith data`: look at data the way the model will see it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.panel import Panel
from rich.text import Text

from tunesmith.cli.common import console, print_json
from tunesmith.config import DEFAULT_MODEL, DataFormat

app = typer.Typer(help="Inspect training data.")


@app.command("show")
def show(
    file: Path = typer.Argument(..., help="Data file (JSONL, JSON, CSV or Parquet).", exists=False),
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
    from tunesmith.data.ingest import load_examples  # noqa: PLC0415
    from tunesmith.data.render import IGNORE_INDEX, render_example  # noqa: PLC0415
    from tunesmith.models.loading import load_tokenizer, resolve_model  # noqa: PLC0415

    examples = load_examples(file, data_format)
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
