"""Plain records for examples and data problems. No torch, no tokenizer.

Owns: the normalised example (a list of chat messages with its source location), the preference
pair (DPO, ORPO), the rated completion (KTO), the plain-text document (continued pretraining), the data error that lists problems by file
and line, and the dataset content hash. Does not own: reading files
(ingest) or tokenising (render).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

MAX_REPORTED_PROBLEMS = 20
ROLES = ("system", "user", "assistant")


class Message(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class Example:
    """One training or evaluation example, normalised to chat messages."""

    messages: list[Message]
    source: str  # "file.jsonl:12": where the example came from, for error messages
    # Classification examples (`text`/`label` rows) keep their label; the final assistant turn holds it too.
    label: str | None = None
    # A row's `references` list: further acceptable answers, scored beside the final assistant turn.
    references: tuple[str, ...] = ()

    def prompt_messages(self) -> list[Message]:
        """Every message before the final assistant turn (the model's input at evaluation)."""
        return self.messages[:-1]

    def reference(self) -> str:
        """The final assistant turn (the expected answer at evaluation)."""
        return self.messages[-1]["content"]

    def all_references(self) -> list[str]:
        """What an answer is scored against: the final assistant turn, then each other `references` entry.

        A reference listed twice is kept once: CIDEr averages over references, so a repeat would weigh it
        twice (BLEU, chrF, ROUGE and METEOR take the best or clip by the most, where repeats change nothing).
        """
        return list(dict.fromkeys((self.reference(), *self.references)))


@dataclass(frozen=True)
class PreferenceExample:
    """A preference pair for DPO and ORPO: two answers to one prompt, the first preferred."""

    prompt: list[Message]  # the conversation so far, ending with a user turn
    chosen: str
    rejected: str
    source: str


@dataclass(frozen=True)
class RatedCompletion:
    """One answer rated good or bad on its own (a thumb), for KTO."""

    prompt: list[Message]  # the conversation so far, ending with a user turn
    completion: str
    desirable: bool
    source: str


@dataclass(frozen=True)
class Document:
    """A plain-text document (a .txt/.md file or a `text` row) for continued pretraining."""

    text: str
    source: str


Record = Example | PreferenceExample | RatedCompletion | Document


@dataclass(frozen=True)
class DataProblem:
    location: str  # "train.jsonl:12" or "train.parquet row 12"
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


@dataclass
class DataError(ValueError):
    """Rows that cannot be used; never dropped silently, always reported with where and why."""

    problems: list[DataProblem]
    total: int = field(default=0)

    def __post_init__(self) -> None:
        self.total = max(self.total, len(self.problems))
        super().__init__(str(self))

    def __str__(self) -> str:
        shown = self.problems[:MAX_REPORTED_PROBLEMS]
        lines = [f"{self.total} invalid row(s):"] + [f"  {problem}" for problem in shown]
        if self.total > len(shown):
            lines.append(f"  ... and {self.total - len(shown)} more")
        return "\n".join(lines)


def records_hash(records: Iterable[PreferenceExample | RatedCompletion]) -> str:
    """Content hash of preference pairs or rated completions (their source locations left out)."""
    digest = hashlib.sha256()
    for record in records:
        fields = {key: value for key, value in vars(record).items() if key != "source"}
        digest.update(json.dumps(fields, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()


def pairs_hash(pairs: Iterable[PreferenceExample]) -> str:
    """Content hash of preference pairs, as `dataset_hash` is of examples."""
    digest = hashlib.sha256()
    for pair in pairs:
        fields = [pair.prompt, pair.chosen, pair.rejected]
        digest.update(json.dumps(fields, ensure_ascii=False, sort_keys=True).encode("utf-8") + b"\n")
    return digest.hexdigest()


def dataset_hash(examples: Iterable[Example]) -> str:
    """Content hash of normalised examples: the same data in another file format hashes the same.

    An example's `references`, when it has any, are part of its content (they change its scores).
    """
    digest = hashlib.sha256()
    for example in examples:
        content: object = example.messages
        if example.references:
            content = {"messages": example.messages, "references": list(example.references)}
        digest.update(json.dumps(content, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
