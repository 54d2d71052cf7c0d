"""Rows in preparation: one record's editable texts, whatever its form. No torch, no tokenizer.

Owns: `PrepRow` (the texts a cleaning step may rewrite, plus what is needed to write the row back in
its normalised form), conversion from ingested records, the texts compared by deduplication and the
leakage check, and the normalised output row. Does not own: the steps themselves (see `prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from tunesmith.data.records import Document, Example, Message, PreferenceExample, RatedCompletion, Record


class RowKind(StrEnum):
    """The normalised output form of a prepared dataset."""

    chat = "chat"  # messages
    classification = "classification"  # text / label (rendered to chat with an instruction)
    preference = "preference"  # prompt / chosen / rejected
    rated = "rated"  # prompt / completion / label (KTO)
    text = "text"  # documents for continued pretraining


@dataclass(frozen=True)
class PrepRow:
    """One row: its editable texts in a fixed order per kind, and where it came from."""

    kind: RowKind
    texts: tuple[str, ...]  # chat: turn contents, then its `references`; classification: text, label;
    #   preference: prompt turns, chosen, rejected; rated: prompt turns, completion; text: the document
    source: str
    roles: tuple[str, ...] = ()  # chat turns' roles (the texts past them are references); preference and
    #   rated: the prompt turns' roles
    desirable: bool | None = None  # rated: the label
    source_ids: dict[str, Any] | None = (
        None  # the row's `source_ids`, kept unchanged (e.g. request and feedback ids)
    )
    instruction: str = ""  # classification: the instruction the text is rendered under
    group: str | None = None  # --group-by value: rows of one group land in one split

    def with_texts(self, texts: list[str]) -> PrepRow:
        return replace(self, texts=tuple(texts))

    def messages(self) -> list[Message]:
        """The conversation the model is trained on (preference: the chosen answer; text: none)."""
        if self.kind is RowKind.chat:
            return [{"role": r, "content": t} for r, t in zip(self.roles, self.texts, strict=False)]
        if self.kind is RowKind.classification:
            return [
                {"role": "user", "content": f"{self.instruction}\n\n{self.texts[0]}"},
                {"role": "assistant", "content": self.texts[1]},
            ]
        if self.kind in (RowKind.preference, RowKind.rated):
            answer = self.texts[len(self.roles)]
            return [*self._prompt(), {"role": "assistant", "content": answer}]
        return []

    def references(self) -> tuple[str, ...]:
        """A chat row's `references` (more acceptable answers, for evaluation); none for other kinds."""
        return self.texts[len(self.roles) :] if self.kind is RowKind.chat else ()

    def _prompt(self) -> list[Message]:
        return [{"role": r, "content": t} for r, t in zip(self.roles, self.texts, strict=False)]

    def full_text(self) -> str:
        """Everything the row says, roles included: what deduplication compares (not its references)."""
        if self.kind is RowKind.chat:
            return "\n".join(f"{r}: {t}" for r, t in zip(self.roles, self.texts, strict=False))
        return "\n".join(self.texts)

    def prompt_text(self) -> str:
        """What the model is given (not what it answers): what the leakage check compares."""
        if self.kind is RowKind.chat:
            last_answer = max(i for i, role in enumerate(self.roles) if role == "assistant")
            return "\n".join(
                f"{r}: {t}" for r, t in zip(self.roles[:last_answer], self.texts[:last_answer], strict=True)
            )
        if self.kind in (RowKind.preference, RowKind.rated):
            return "\n".join(f"{m['role']}: {m['content']}" for m in self._prompt())
        return self.texts[0]

    def label(self) -> str | None:
        return self.texts[1] if self.kind is RowKind.classification else None

    def output(self, default_instruction: str) -> dict[str, Any]:
        """The normalised row written to `<split>.jsonl`, with its `source_ids` when it has them."""
        row = self._output(default_instruction)
        return row if self.source_ids is None else {**row, "source_ids": self.source_ids}

    def _output(self, default_instruction: str) -> dict[str, Any]:
        if self.kind is RowKind.chat:
            references = self.references()
            return {"messages": self.messages()} | ({"references": list(references)} if references else {})
        if self.kind is RowKind.classification:
            row = {"text": self.texts[0], "label": self.texts[1]}
            return (
                row if self.instruction == default_instruction else {**row, "instruction": self.instruction}
            )
        if self.kind in (RowKind.preference, RowKind.rated):
            prompt = self._prompt()
            written: dict[str, Any] = {"prompt": prompt[0]["content"] if self.roles == ("user",) else prompt}
            names = ("chosen", "rejected") if self.kind is RowKind.preference else ("completion",)
            written |= dict(zip(names, self.texts[len(self.roles) :], strict=True))
            return written if self.desirable is None else {**written, "label": self.desirable}
        return {"text": self.texts[0]}


def to_prep_row(record: Record, raw: Any, instruction: str, group: str | None) -> PrepRow:
    """A `PrepRow` from an ingested record and its (column-mapped) raw row (`source_ids` kept)."""
    row = _to_prep_row(record, raw, instruction, group)
    source_ids = raw.get("source_ids") if isinstance(raw, dict) else None
    return row if not isinstance(source_ids, dict) else replace(row, source_ids=source_ids)


def _to_prep_row(record: Record, raw: Any, instruction: str, group: str | None) -> PrepRow:
    texts: tuple[str, ...]
    if isinstance(record, PreferenceExample | RatedCompletion):
        roles = tuple(message["role"] for message in record.prompt)
        prompt = tuple(message["content"] for message in record.prompt)
        if isinstance(record, PreferenceExample):
            texts = (*prompt, record.chosen, record.rejected)
            return PrepRow(RowKind.preference, texts, record.source, roles=roles, group=group)
        texts = (*prompt, record.completion)
        return PrepRow(RowKind.rated, texts, record.source, roles, desirable=record.desirable, group=group)
    if isinstance(record, Document):
        return PrepRow(RowKind.text, (record.text,), record.source, group=group)
    assert isinstance(record, Example)
    if record.label is not None:
        row_instruction = raw.get("instruction") or instruction
        texts = (str(raw["text"]), record.label)
        return PrepRow(RowKind.classification, texts, record.source, instruction=row_instruction, group=group)
    roles = tuple(message["role"] for message in record.messages)
    texts = (*(message["content"] for message in record.messages), *record.references)
    return PrepRow(RowKind.chat, texts, record.source, roles=roles, group=group)
