"""Personal data detection and redaction with typed placeholders. Pure functions over strings.

Owns: the patterns for emails, phone numbers, payment card numbers (Luhn-checked), IBANs (mod-97
checked), IPv4/IPv6 addresses and US social security numbers, and replacing each match with its
placeholder (`[EMAIL]`, `[PHONE]`, `[CARD]`, `[IBAN]`, `[IP]`, `[SSN]`). Does not own: what happens to
a row that holds personal data (see `prepare`). Checksums keep random digit runs (order numbers,
timestamps) from being taken for cards or IBANs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_CARD = re.compile(  # unbroken, or in groups of four (Amex: 4-6-5) with one kind of separator
    r"(?<![\d-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{5})(?![\d-])"
)
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_PHONE = re.compile(
    r"(?<![\w+=<>*/-])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]?\d{4}"
    r"(?![\w-]|[ .-]\d|\s*[=+*/<>])"
)
_DIGIT = re.compile(r"\d")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d|\.\d)")  # a full stop may end the sentence
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


@dataclass(frozen=True)
class PiiMatch:
    kind: str  # placeholder name: EMAIL, PHONE, CARD, IBAN, IP, SSN
    start: int
    end: int


def is_luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def is_iban_valid(text: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97 == 1."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    return 13 <= len(digits) <= 19 and is_luhn_valid(digits)


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _always(text: str) -> bool:
    return True


# Order matters: a longer, checksummed kind claims its characters before a looser pattern can.
_DETECTORS: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
    ("EMAIL", _EMAIL, _always),
    ("IBAN", _IBAN, is_iban_valid),
    ("CARD", _CARD, _card),
    ("SSN", _SSN, _always),
    ("IP", _IPV4, _ip),
    ("IP", _IPV6, _ip),
    ("PHONE", _PHONE, _always),
]
KINDS = ("EMAIL", "PHONE", "CARD", "IBAN", "IP", "SSN")


def find_pii(text: str) -> list[PiiMatch]:
    """Every personal-data match in `text`, non-overlapping, in order."""
    found: list[PiiMatch] = []
    has_digit = _DIGIT.search(text) is not None
    for kind, pattern, check in _DETECTORS:
        if kind == "EMAIL" and "@" not in text:
            continue
        if kind != "EMAIL" and not has_digit:
            continue
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < other.end and other.start < end for other in found):
                continue
            if check(match.group()):
                found.append(PiiMatch(kind, start, end))
    return sorted(found, key=lambda match: match.start)


def redact(text: str, matches: list[PiiMatch]) -> str:
    """`text` with every match replaced by its typed placeholder (`[EMAIL]`, ...)."""
    pieces, cursor = [], 0
    for match in matches:
        pieces += [text[cursor : match.start], f"[{match.kind}]"]
        cursor = match.end
    pieces.append(text[cursor:])
    return "".join(pieces)
