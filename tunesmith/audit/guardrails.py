"""Guardrails on served text: checking a prompt, and an answer as it streams. Pure Python, no torch.

Owns: compiling a `GuardrailSpec` once into a `Guard` (regular expressions precompiled), checking
prompt texts (`check_input`: PII, blocklist and patterns, topic allow-list, maximum length), and
`OutputScanner`, which checks an answer chunk by chunk and releases only text it has decided on.
It holds back only the tail that could still grow into a match: the word being written (an email,
IP or unspaced card of any length), a number still being written with its separators (a phone, a
spaced card, an SSN), a spaced IBAN, the first words of a multi-word blocklist term, and, with
regex patterns (whose extent it cannot know), the last 64 characters. So a match that crosses
chunk boundaries is whole before it is judged, and a blocked span never leaves, not even its first
characters. (An answer the classifier adapter is to judge is held whole, see `serve.service`.) Each
action is a `GuardEvent` (guard, action, reason, direction); reasons name the kind of match, never
the matched text. Does not own: where the settings live (see
`registry.guardrail_store`), the classifier adapter (it needs the model, see `serve.moderation`), or
HTTP (see `serve.service`, `serve.routes.openai`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tunesmith.config import GuardAction, GuardrailSpec
from tunesmith.data.pii import find_pii

PATTERN_TAIL_CHARS = 64  # held back with regex patterns: what a pattern may match across spaces
CONTEXT_CHARS = 16  # decided text kept before the undecided tail, for the detectors' lookbehinds
MAX_HELD_RUN = 320  # a scanner holds at most this much (no email is longer), releasing what comes before
_SPACE = re.compile(r"\s")
_LAST_WORD = re.compile(r"\S*$")
_NUMBER_BEING_WRITTEN = re.compile(r"[\d(+][\d\s().+-]*$")  # phones, spaced cards, SSNs
_IBAN_BEING_WRITTEN = re.compile(r"\b[A-Z]{2}\d{2}[A-Z0-9 ]*$")
_ACTION_RANK = {GuardAction.flag: 0, GuardAction.redact: 1, GuardAction.block: 2}


@dataclass(frozen=True)
class GuardEvent:
    """One guardrail action on a request, as recorded and counted."""

    guard: str  # pii, terms, topics, max_length, classifier
    action: str  # flag, redact or block
    reason: str  # the kind of match (e.g. "EMAIL", "blocklist", "pattern ORDER"), never the text
    direction: str  # input or output

    def message(self) -> str:
        """What a client is told of a blocked prompt (no guard internals, no list contents)."""
        what = {
            "pii": f"holds personal data ({self.reason})",
            "terms": f"matches a blocked term ({self.reason})",
            "topics": "is off the topics this model answers",
            "max_length": self.reason,
            "classifier": f"was classified as {self.reason}",
        }[self.guard]
        return (
            f"the {'prompt' if self.direction == 'input' else 'answer'} {what}; it was blocked by a guardrail"
        )


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    guard: str
    kind: str  # the placeholder name: EMAIL, BLOCKED, a pattern's NAME
    action: GuardAction


@dataclass(frozen=True)
class Classifier:
    """The moderation adapter's settings (see `serve.moderation`)."""

    adapter: str
    labels: tuple[str, ...]
    blocked_labels: frozenset[str]
    threshold: float
    instruction: str | None
    answers: bool  # whole answers are classified too (so held until complete)


@dataclass(frozen=True)
class Guard:
    """A compiled `GuardrailSpec`: what `check_input` and `OutputScanner` apply."""

    pii: dict[str, GuardAction]  # direction -> action
    pii_kinds: frozenset[str]
    terms: dict[str, GuardAction]  # direction -> action
    patterns: tuple[tuple[str, re.Pattern[str]], ...]  # (placeholder, regex); the blocklist is BLOCKED
    topics: re.Pattern[str] | None
    topic_action: GuardAction
    max_input_chars: int | None
    max_output_chars: int | None
    classifier: Classifier | None
    refusal: str | None
    term_starts: re.Pattern[str] | None  # the first words of a multi-word term, at the end of a text
    tail_chars: int  # characters an output scanner holds back at least (with patterns)

    def checks_output(self) -> bool:
        """Whether answers need an `OutputScanner` (else they pass as generated)."""
        return (
            self.pii["output"] is not GuardAction.off
            or (self.terms["output"] is not GuardAction.off and bool(self.patterns))
            or self.max_output_chars is not None
            or (self.classifier is not None and self.classifier.answers)
        )


def compile_guard(spec: GuardrailSpec) -> Guard:
    """The `Guard` for `spec` (its regular expressions were checked when the spec was loaded)."""
    patterns = [(name, re.compile(pattern)) for name, pattern in spec.terms.patterns.items()]
    terms = sorted(spec.terms.blocklist, key=len, reverse=True)
    if terms:
        alternatives = "|".join(r"\s+".join(map(re.escape, term.split())) for term in terms)
        patterns.insert(0, ("BLOCKED", re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)))
    allow = sorted(spec.topics.allow, key=len, reverse=True)
    topics = (
        re.compile(rf"\b(?:{'|'.join(re.escape(word.lower()) for word in allow)})s?\b", re.IGNORECASE)
        if allow
        else None
    )
    classifier = spec.classifier
    return Guard(
        pii={"input": spec.pii.input, "output": spec.pii.output},
        pii_kinds=frozenset(spec.pii.kinds),
        terms={"input": spec.terms.input, "output": spec.terms.output},
        patterns=tuple(patterns),
        topics=topics,
        topic_action=spec.topics.action,
        max_input_chars=spec.max_input_chars,
        max_output_chars=spec.max_output_chars,
        classifier=None
        if classifier is None
        else Classifier(
            classifier.adapter,
            tuple(classifier.labels),
            frozenset(classifier.blocked_labels),
            classifier.threshold,
            classifier.instruction,
            classifier.answers,
        ),  # fmt: skip
        refusal=spec.refusal,
        term_starts=_term_starts(terms),
        tail_chars=PATTERN_TAIL_CHARS if spec.terms.patterns else 0,
    )


def _term_starts(terms: list[str]) -> re.Pattern[str] | None:
    """A regex for the first words of any multi-word term ending the text (maybe with part of the next)."""
    starts = {tuple(term.split()[:count]) for term in terms for count in range(1, len(term.split()))}
    if not starts:
        return None
    alternatives = "|".join(
        r"\s+".join(map(re.escape, words)) for words in sorted(starts, key=len, reverse=True)
    )
    return re.compile(rf"(?<!\w)(?:{alternatives})\s+\S*$", re.IGNORECASE)


def _find_spans(guard: Guard, text: str, direction: str, offset: int = 0) -> list[_Span]:
    """Every match starting at `offset` or later of the guards on for `direction`, sorted, overlaps
    resolved (the stronger action wins)."""
    found: list[_Span] = []
    pii_action = guard.pii[direction]
    if pii_action is not GuardAction.off:
        found += [
            _Span(match.start, match.end, "pii", match.kind, pii_action)
            for match in find_pii(text)
            if match.kind in guard.pii_kinds and match.start >= offset
        ]
    terms_action = guard.terms[direction]
    if terms_action is not GuardAction.off:
        for name, pattern in guard.patterns:
            found += [
                _Span(match.start(), match.end(), "terms", name, terms_action)
                for match in pattern.finditer(text, offset)
                if match.end() > match.start()
            ]
    found.sort(key=lambda span: (span.start, -_ACTION_RANK[span.action], -span.end))
    kept: list[_Span] = []
    for span in found:
        if kept and span.start < kept[-1].end:
            if _ACTION_RANK[span.action] > _ACTION_RANK[kept[-1].action]:
                kept[-1] = _Span(
                    kept[-1].start, max(span.end, kept[-1].end), span.guard, span.kind, span.action
                )
            continue
        kept.append(span)
    return kept


def _reason(span: _Span) -> str:
    if span.guard == "pii":
        return span.kind
    return "blocklist" if span.kind == "BLOCKED" else f"pattern {span.kind}"


def _apply(
    text: str, spans: Sequence[_Span], direction: str, events: list[GuardEvent]
) -> tuple[str, GuardEvent | None]:
    """`text` with redactions made up to the first blocking span (then the text before it, and its event)."""
    pieces, cursor = [], 0
    for span in spans:
        event = GuardEvent(span.guard, str(span.action), _reason(span), direction)
        events.append(event)
        if span.action is GuardAction.block:
            pieces.append(text[cursor : span.start])
            return "".join(pieces), event
        if span.action is GuardAction.redact:
            pieces += [text[cursor : span.start], f"[{span.kind}]"]
            cursor = span.end
    pieces.append(text[cursor:])
    return "".join(pieces), None


@dataclass
class InputVerdict:
    """A prompt's texts after the guards (redacted where asked), what they did, and the block if any."""

    texts: list[str]
    events: list[GuardEvent]
    blocked: GuardEvent | None


def check_input(guard: Guard, texts: Sequence[str], *, topic_texts: Sequence[str]) -> InputVerdict:
    """Check a prompt's texts (chat message contents or completion prompts) against `guard`.

    `topic_texts` are checked against the topic allow-list (the last user message of a chat; each
    completion prompt): each must hold an allowed keyword.
    """
    events: list[GuardEvent] = []
    total = sum(len(text) for text in texts)
    if guard.max_input_chars is not None and total > guard.max_input_chars:
        reason = f"is {total} characters, over the limit of {guard.max_input_chars}"
        event = GuardEvent("max_length", "block", reason, "input")
        return InputVerdict(list(texts), [event], event)
    topics = guard.topics
    if topics is not None and guard.topic_action is not GuardAction.off:
        off_topic = any(topics.search(text) is None for text in topic_texts)
        if off_topic:
            event = GuardEvent("topics", str(guard.topic_action), "off topic", "input")
            events.append(event)
            if guard.topic_action is GuardAction.block:
                return InputVerdict(list(texts), events, event)
    checked = []
    for text in texts:
        new_text, blocked = _apply(text, _find_spans(guard, text, "input"), "input", events)
        if blocked is not None:
            return InputVerdict(list(texts), events, blocked)
        checked.append(new_text)
    return InputVerdict(checked, events, None)


@dataclass
class OutputScanner:
    """Checks one answer as it streams: `feed` each chunk, send what it returns, then send `finish()`.

    Once `stopped` is set ("content_filter": a block; "length": `max_output_chars`) nothing more is
    released, and the generation should be stopped.
    """

    guard: Guard
    events: list[GuardEvent] = field(default_factory=list)
    stopped: str | None = None
    _pending: str = ""  # generated, not yet decided
    _context: str = ""  # the end of the decided text: lookbehind for the next matches
    _decided: int = 0  # characters of the answer decided so far
    _next_decision: int = 0  # decide again once this much is pending

    def feed(self, chunk: str) -> str:
        """The text that can be sent now (possibly empty) after `chunk` arrives."""
        if self.stopped is not None:
            return ""
        self._pending += chunk
        limit = self.guard.max_output_chars
        classifier = self.guard.classifier
        holds_whole = classifier is not None and classifier.answers  # released by `finish`, once classified
        if limit is not None and self._decided + len(self._pending) > limit:
            self._pending = self._pending[: limit - self._decided]
            released = "" if holds_whole else self._decide(final=True)
            if self.stopped is None:
                reason = f"is over the limit of {limit} characters"
                self.events.append(GuardEvent("max_length", "block", reason, "output"))
                self.stopped = "length"
            return released
        if len(self._pending) < self._next_decision or holds_whole:
            return ""
        if _SPACE.search(chunk) is None and len(self._pending) < MAX_HELD_RUN:
            return ""  # a word goes on: nothing new can be decided
        return self._decide(final=False)

    @property
    def held_chars(self) -> int:
        """Characters generated and not yet decided (what the client's text trails the model's by)."""
        return len(self._pending)

    def finish(self) -> str:
        """The rest of the answer, decided now that no more text comes."""
        return "" if self.stopped == "content_filter" else self._decide(final=True)

    def _decide(self, *, final: bool) -> str:
        text = self._context + self._pending
        offset = len(self._context)
        spans = _find_spans(self.guard, text, "output", offset)
        boundary = len(text) if final else self._boundary(text, offset, spans)
        if boundary <= offset:
            return ""
        decided = [span for span in spans if span.end <= boundary]
        released, blocked = _apply(text[:boundary], decided, "output", self.events)
        released = released[offset:]  # every span starts after the context, so it is the same text
        if blocked is not None:
            self.stopped = "content_filter"
            self._pending = ""
            return released
        self._decided += boundary - offset
        self._context = text[max(0, boundary - CONTEXT_CHARS) : boundary]
        self._pending = text[boundary:]
        # with patterns every scan covers their 64-character tail: scan again after a quarter of it
        self._next_decision = len(self._pending) + self.guard.tail_chars // 4
        return released

    def _boundary(self, text: str, offset: int, spans: list[_Span]) -> int:
        """Where the decided text ends: before whatever at the end may still grow into a match."""
        floor = max(offset, len(text) - MAX_HELD_RUN)
        boundary = len(text) - self.guard.tail_chars
        if boundary < len(text):  # then at a word start, so a term is never cut
            boundary = _LAST_WORD.search(text, floor, max(floor, boundary)).start()  # type: ignore[union-attr]
        term_starts = self.guard.term_starts
        for pattern in (
            _LAST_WORD,
            _NUMBER_BEING_WRITTEN,
            _IBAN_BEING_WRITTEN,
            *([term_starts] if term_starts else []),
        ):
            held = pattern.search(text, floor)
            if held is not None:
                boundary = min(boundary, held.start())
        boundary = max(boundary, floor)
        for span in reversed(spans):
            if span.start < boundary < span.end:
                boundary = span.start
        return boundary
