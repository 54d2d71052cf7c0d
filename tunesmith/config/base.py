"""What every spec shares: the base class, YAML switches and durations, data forms, precisions,
and where tunesmith keeps its files (`TUNESMITH_HOME`, the registry URL). No torch."""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict

DEFAULT_MODEL = "smollm2-135m-instruct"
SpecT = TypeVar("SpecT", bound=BaseModel)


def _yaml_switch(value: Any) -> Any:
    """YAML reads a bare `on`/`off` (and yes/no, true/false) as a boolean: take it as the word."""
    return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


Switch = Annotated[Literal["auto", "on", "off"], BeforeValidator(_yaml_switch)]

_DURATION = re.compile(
    r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?"
)


def duration_seconds(value: Any) -> Any:
    """`30d`, `20m`, `1h30m`, `90s` or a plain number of seconds, as seconds (other values are left to the type)."""
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    match = _DURATION.fullmatch(text)
    if match is None or not any(match.groups()):
        try:
            return float(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a duration; write e.g. 30d, 20m, 1h30m, 90s or 1200"
            ) from None
    days, hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


Duration = Annotated[float, BeforeValidator(duration_seconds)]


def tunesmith_home() -> Path:
    """Root of caches, runs and the registry: `$TUNESMITH_HOME`, else `~/.cache/tunesmith`."""
    env = os.environ.get("TUNESMITH_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tunesmith"


def default_database_url() -> str:
    """The registry database: `$TUNESMITH_DATABASE_URL`, else SQLite under `TUNESMITH_HOME`."""
    env = os.environ.get("TUNESMITH_DATABASE_URL")
    return env if env else f"sqlite:///{tunesmith_home() / 'registry.db'}"


class DataFormat(StrEnum):
    """The example forms tunesmith reads; all but preference pairs, rated answers and plain text become chat."""

    alpaca = "alpaca"  # instruction / input / output
    chat = "chat"  # messages: [{role, content}, ...] (OpenAI style)
    sharegpt = "sharegpt"  # conversations: [{from, value}, ...]
    prompt_completion = "prompt_completion"  # prompt / completion
    classification = "classification"  # text / label, rendered to chat with an instruction
    preference = "preference"  # prompt / chosen / rejected, chat-style chosen / rejected message lists, or
    #   OpenAI's input / preferred_output / non_preferred_output (preference pairs, not chat)
    rated = "rated"  # prompt / completion / label (true: a good answer, false: a bad one), for KTO
    text = "text"  # text only: documents for continued pretraining (not chat)


class Precision(StrEnum):
    """Numeric precision of the training step."""

    auto = "auto"  # bf16 autocast where the hardware runs it fast, fp32 otherwise
    bf16 = "bf16"
    fp32 = "fp32"


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})  # where a server without auth may listen


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ConfigError(ValueError):
    """A config file or flag the user gave is invalid; the message names the key."""
