"""`tunesmith export`: an adapter or run to merged weights, GGUF, Ollama or vLLM, with parity checks."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunesmith.cli.common import console, err_console, print_json

# The library's tables (core.FORMATS and hub, merged.DTYPES, gguf.FILE_TYPES), named without importing torch.
FORMAT_NAMES = ("merged", "gguf", "gguf-lora", "ollama", "vllm", "hub")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
QUANTIZATION_NAMES = ("f16", "q8_0")
LOGIT_CHECK_PROMPTS, GREEDY_CHECK_PROMPTS = 50, 200  # issue #21's counts for the two checks


def export(
    source: str = typer.Argument(..., help="Adapter folder, or a run id / run folder with an adapter."),
    fmt: str = typer.Option(..., "--format", "-f", help=f"Target: {', '.join(FORMAT_NAMES)}."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create (refused if it exists)."),
    force: bool = typer.Option(
        False, "--force", help="Replace --out if it exists (only after the checks pass)."
    ),
    dtype: str = typer.Option(
        "float32", "--dtype", help="merged: float32, bfloat16 or float16 (merged in fp32 first)."
    ),
    quantization: str = typer.Option("f16", "--quantization", "-q", help="gguf/ollama: f16 or q8_0."),
    prompts: Path | None = typer.Option(
        None,
        "--prompts",
        help="JSONL chats ({'messages': [...]}) for the checks; default: the run's validation (else "
        "training) data, the demo data for an adapter outside a run.",
    ),
    repo_id: str | None = typer.Option(
        None, "--repo-id", help="hub: the model repository, e.g. me/my-model."
    ),
    private: bool = typer.Option(False, "--private", help="hub: create the repository as private."),
    prompt_count: int | None = typer.Option(
        None,
        "--prompt-count",
        help="Prompts the logit and greedy-token checks use (default: 200 for gguf and ollama, whose "
        "greedy-token agreement is a share of positions and needs them; 50 otherwise).",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Export SOURCE as --format into --out; the parity checks run first and land in `parity.json`."""
    from tunesmith.config import default_database_url
    from tunesmith.export.core import export_model, export_to_hub, find_adapter
    from tunesmith.registry.store import Registry

    choices = ((fmt, FORMAT_NAMES, "--format"), (dtype, DTYPE_NAMES, "--dtype"),
               (quantization, QUANTIZATION_NAMES, "--quantization"))  # fmt: skip
    for value, names, option in choices:
        if value not in names:
            raise typer.BadParameter(f"{value}: choose from {', '.join(names)}", param_hint=option)
    registry = Registry(default_database_url()).connect()
    adapter = find_adapter(source, registry.find_run_dir)
    chats, prompt_source = (_read_chats(prompts), str(prompts)) if prompts else _default_chats(adapter)
    if prompt_count is None:
        prompt_count = GREEDY_CHECK_PROMPTS if fmt in ("gguf", "ollama") else LOGIT_CHECK_PROMPTS
    if fmt == "hub" and repo_id is None:
        raise typer.BadParameter("--format hub needs --repo-id", param_hint="--repo-id")
    # Merging, writing and the parity checks take minutes for a GGUF on a CPU: a spinner on stderr says it
    # is working (stdout stays the --json result).
    with err_console.status(f"exporting {fmt}: merging, writing and running the parity checks"):
        if fmt == "hub":
            assert repo_id is not None
            result = export_to_hub(
                adapter, repo_id, out, force=force, chats=chats, prompt_count=prompt_count, dtype=dtype,
                token=None, private=private,
            )  # fmt: skip
        else:
            result = export_model(
                adapter, fmt, out, force=force, chats=chats, prompt_count=prompt_count, dtype=dtype,
                quantization=quantization,
            )  # fmt: skip
    registry.record_export(adapter, fmt, result.out, result.bytes, result.parity)
    if json_output:
        print_json({"out": str(result.out), "format": fmt, "seconds": result.seconds, "bytes": result.bytes,
                    "prompts": prompt_source, "parity": result.parity})  # fmt: skip
        return
    console.print(f"exported {fmt} to {result.out} ({result.bytes / 1e6:.1f} MB, {result.seconds:.1f}s)")
    console.print(f"  checked on {prompt_count} prompts from {prompt_source}", highlight=False)
    for check, figures in result.parity.items():
        console.print(f"  {check}: {json.dumps(figures)}", highlight=False)


def _default_chats(adapter: Path) -> tuple[list[list[dict[str, str]]], str]:
    """The run's own validation (else training) chats; the demo data for an adapter outside a run."""
    from tunesmith.export.parity import DEMO_DATA, demo_chats, run_chats

    return run_chats(adapter) or (demo_chats(), str(DEMO_DATA))


def _read_chats(path: Path) -> list[list[dict[str, str]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [list(json.loads(line)["messages"]) for line in lines if line.strip()]
