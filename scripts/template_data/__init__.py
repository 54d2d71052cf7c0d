"""Sample datasets of the project templates, one module per template (see make_template_data.py)."""

from __future__ import annotations

from typing import Any

Row = dict[str, Any]


def chat(system: str, user: str, assistant: str) -> Row:
    """One example in the chat form."""
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": assistant},
        ]
    }
