"""The `ollama` export's Modelfile: TEMPLATE, stop parameters and system prompt from the chat template.

Owns: reading a chat template's per-role wrapping (by rendering marker messages through it), writing
it as an Ollama Go template, and checking that wrapping against the tokenizer on multi-turn chats.
Does not own: the GGUF file beside it (`gguf`).

Templates whose output is not "a prefix per role, the content, a common suffix" (plus an optional
default system prompt and a generation prompt) are refused: the check fails on them, naming the chat.
The Go template is a direct transcription of the wrapping the check renders, so the two cannot drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from tunesmith.export.errors import ParityError
from tunesmith.export.parity import Chat, check_rendering

_MARK = {"system": "\x00SYSTEM\x00", "user": "\x00USER\x00", "assistant": "\x00ASSISTANT\x00"}


@dataclass(frozen=True)
class Wrapping:
    """How a chat template lays out messages: `prefix[role] + content + suffix`, in order."""

    prefix: dict[str, str]
    suffix: str
    generation_prompt: str
    default_system: str | None  # the system message the template adds when a chat has none

    def render(self, chat: Chat, generation_prompt: bool) -> str:
        """The text Ollama will build from this wrapping (its SYSTEM fills in a missing system message)."""
        if self.default_system is not None and chat[0]["role"] != "system":
            chat = [{"role": "system", "content": self.default_system}, *chat]
        text = "".join(self.prefix[m["role"]] + m["content"] + self.suffix for m in chat)
        return text + (self.generation_prompt if generation_prompt else "")


def read_wrapping(tokenizer: PreTrainedTokenizerBase) -> Wrapping:
    """The per-role wrapping of `tokenizer`'s chat template, read from renders of marker messages."""
    messages = [{"role": role, "content": mark} for role, mark in _MARK.items()]
    text = str(tokenizer.apply_chat_template(messages, tokenize=False))
    prompted = str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    before_system, rest = text.split(_MARK["system"])
    system_to_user, rest = rest.split(_MARK["user"])
    user_to_assistant, suffix = rest.split(_MARK["assistant"])
    if not (system_to_user.startswith(suffix) and user_to_assistant.startswith(suffix)):
        raise ParityError(
            "the chat template does not close every message the same way; Ollama export refused"
        )
    prefix = {
        "system": before_system,
        "user": system_to_user[len(suffix) :],
        "assistant": user_to_assistant[len(suffix) :],
    }
    alone = str(tokenizer.apply_chat_template([messages[1]], tokenize=False))
    default_system = None
    if alone != prefix["user"] + _MARK["user"] + suffix:
        inner = alone[len(prefix["system"]) :].split(suffix + prefix["user"] + _MARK["user"])[0]
        default_system = inner
    return Wrapping(prefix, suffix, prompted[len(text) :], default_system)


def go_template(wrapping: Wrapping) -> str:
    """The wrapping as an Ollama TEMPLATE (Go text/template over `.Messages`)."""
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{prefix}'
        for i, (role, prefix) in enumerate(wrapping.prefix.items())
    )
    return (
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        f"{branches}{{{{ end }}}}{{{{ .Content }}}}{wrapping.suffix}"
        f'{{{{ if and $last (ne .Role "assistant") }}}}{wrapping.generation_prompt}{{{{ end }}}}{{{{ end }}}}'
    )


def write_modelfile(
    tokenizer: PreTrainedTokenizerBase, gguf_path: str, modelfile: Path, chats: Sequence[Chat]
) -> dict[str, Any]:
    """Write the Modelfile after checking its wrapping renders `chats` as the tokenizer does."""
    wrapping = read_wrapping(tokenizer)
    cases = [(chat, False) for chat in chats] + [
        (chat[:-1], True) for chat in chats if chat[-1]["role"] == "assistant"
    ]
    result = check_rendering(tokenizer, cases, wrapping.render, "Modelfile TEMPLATE")
    stops = sorted({wrapping.suffix.strip(), str(tokenizer.eos_token)} - {""})
    lines = [f"FROM {gguf_path}", f'TEMPLATE """{go_template(wrapping)}"""']
    if wrapping.default_system is not None:
        lines.append(f'SYSTEM """{wrapping.default_system}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    modelfile.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {**result, "stops": stops, "default_system": wrapping.default_system}
