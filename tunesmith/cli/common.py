"""Shared CLI helpers: consoles, JSON output and the user-error exit path."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from tunesmith.config import ConfigError
from tunesmith.data.records import DataError
from tunesmith.export.errors import ParityError
from tunesmith.models.catalog import ModelNotFoundError

console = Console()
err_console = Console(stderr=True)


class UsageError(ValueError):
    """A command was called with arguments that cannot work together."""


USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    FileExistsError,
    FileNotFoundError,
    ModelNotFoundError,
    ParityError,
    UsageError,
)


def fail(message: str) -> NoReturn:
    # escaped: a message's own brackets (`tunesmith[vllm]`, `[BLOCKED]`) are text, not rich markup
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    sys.exit(2)


def print_json(payload: Any) -> None:
    """Exactly one JSON document on stdout (progress and logs go to stderr)."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
