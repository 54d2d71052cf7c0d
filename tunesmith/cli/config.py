"""`tunesmith config`: the reference of every config-file key, with its flag, default and description.

Owns: rendering that reference (Markdown) from the specs, the project file's and the loop policy's specs
the federated job's spec, and the flag tables in `cli/options.py`; the README's "Configuration reference" is this command's output,
and a test keeps the two equal. Does not own: the keys or their descriptions (`tunesmith.config`,
`tunesmith.project.spec`, `tunesmith.loop.policy`), or which of them are flags (`cli/options.py`).
"""

from __future__ import annotations

import typer
from pydantic import BaseModel

from tunesmith.cli.options import COMMAND_FLAGS, Flag, field_info, flag_names, format_default, spec_keys
from tunesmith.config import SECTIONS, FederatedSpec
from tunesmith.config.tune import TuneSpec
from tunesmith.loop.policy import LoopPolicySpec
from tunesmith.project.spec import ProjectSpec

app = typer.Typer(help="The keys a config file takes.")


@app.command("reference")
def reference() -> None:
    """Print every config-file key, section by section: its flag, default and description (Markdown)."""
    typer.echo(config_reference(), nl=False)


def config_reference() -> str:
    """The reference as Markdown: one table per config-file section."""
    commands: dict[type[BaseModel], list[str]] = {}
    flags: dict[type[BaseModel], dict[str, Flag]] = {}
    for command, (spec_class, command_flags) in COMMAND_FLAGS.items():
        commands.setdefault(spec_class, []).append(f"`tunesmith {command}`")
        flags.setdefault(spec_class, {}).update({flag.key: flag for flag in command_flags})
    parts = []
    for spec_class, section in SECTIONS.items():
        parts.append(f"### `{section}:` ({', '.join(commands[spec_class])})\n\n")
        parts.append("| key | flag | default | description |\n|---|---|---|---|\n")
        for key in spec_keys(spec_class):
            parts.append(_row(spec_class, key, _flag_text(spec_class, flags[spec_class].get(key))))
        parts.append("\n")
    parts.append("### `tunesmith.yaml` (`tunesmith run`, `tunesmith status`; no flags)\n\n")
    parts.append("| key | flag | default | description |\n|---|---|---|---|\n")
    parts += [_row(ProjectSpec, key, "") for key in spec_keys(ProjectSpec)]
    parts.append("\n")
    parts.append("### `loop.yaml` (`tunesmith loop run --policy`; no flags)\n\n")
    parts.append("| key | flag | default | description |\n|---|---|---|---|\n")
    parts += [_row(LoopPolicySpec, key, "") for key in spec_keys(LoopPolicySpec)]
    parts.append("\n")
    parts.append("### tune file (`tunesmith tune --config`)\n\n")
    parts.append("| key | flag | default | description |\n|---|---|---|---|\n")
    parts += [_row(TuneSpec, key, _TUNE_FLAGS.get(key, "")) for key in spec_keys(TuneSpec)]
    parts.append("\n")
    parts.append(
        "### `fed.yaml` (`tunesmith federated simulate`, `tunesmith federated server`; no flags)\n\n"
    )
    parts.append("| key | flag | default | description |\n|---|---|---|---|\n")
    parts += [_row(FederatedSpec, key, "") for key in spec_keys(FederatedSpec)]
    parts.append("\n")
    return "".join(parts)


# The tune file's keys that `tunesmith tune` also takes as flags (it declares them itself).
_TUNE_FLAGS = {name: f"`--{name.replace('_', '-')}`" for name in ("trials", "time_budget", "workers", "storage",
                                                                   "study", "seed")}  # fmt: skip


def _row(spec_class: type[BaseModel], key: str, flag: str) -> str:
    field = field_info(spec_class, key)
    shown = format_default(field)
    default = "required" if field.is_required() else f"`{shown}`" if shown else ""
    description = (field.description or "").replace("|", "\\|")
    return f"| `{key}` | {flag} | {default} | {description} |\n"


def _flag_text(spec_class: type[BaseModel], flag: Flag | None) -> str:
    if flag is None:
        return ""
    if flag.positional:
        return f"`{flag.key.upper()}...`"
    return " ".join(f"`{name}`" for name in flag_names(spec_class, flag))
