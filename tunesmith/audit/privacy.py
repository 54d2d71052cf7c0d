"""Request-log privacy: what of a prompt and its outputs a tenant's request log keeps. No torch.

Owns: the per-tenant modes (off, redacted, full) and applying one to a logged request, with the data
preparation PII detectors (`data.pii`). Does not own: where the setting is stored or the log itself
(see `registry.serving_store`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from tunesmith.data.pii import find_pii, redact


class RequestLogMode(StrEnum):
    """How much text a tenant's request log keeps (the row itself is always kept: feedback, A/B)."""

    OFF = "off"  # no prompt or output text, only the metadata (model, tokens, latency)
    REDACTED = "redacted"  # text with emails, phones, cards, IBANs, IPs and SSNs replaced (the default)
    FULL = "full"  # text as sent and generated


DEFAULT_MODE = RequestLogMode.REDACTED


def redact_text(text: str) -> str:
    """`text` with every PII match replaced by its typed placeholder (`[EMAIL]`, ...)."""
    return redact(text, find_pii(text))


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _redact_value(item) for key, item in value.items()}
    return value


def apply_mode(
    mode: RequestLogMode, prompt: dict[str, Any], outputs: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """The prompt and outputs to store under `mode` (redacted: every string in them, roles included)."""
    if mode is RequestLogMode.OFF:
        return {}, []
    if mode is RequestLogMode.REDACTED:
        return _redact_value(prompt), [redact_text(output) for output in outputs]
    return prompt, outputs
