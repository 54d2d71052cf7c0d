"""Text cleaning steps. Pure functions over strings (plus a line counter for boilerplate).

Owns: repairing broken Unicode (mojibake, via ftfy), stripping HTML tags, normalising whitespace
(code indentation kept) and finding boilerplate lines that repeat across many rows. Does not own:
which texts of a record are cleaned, or counting and reporting (see `prepare`).
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable

import ftfy

# Only real HTML tags, so `a < b`, `List<String>` and `<your name>` in ordinary text survive.
_HTML_TAGS = (
    "a|abbr|b|blockquote|body|br|center|code|div|em|font|h[1-6]|head|hr|html|i|img|li|meta|ol|p|pre|"
    "small|span|strong|sub|sup|table|tbody|td|th|thead|title|tr|u|ul"
)
_SCRIPT = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(rf"</?(?:{_HTML_TAGS})\b[^<>]*?/?>", re.IGNORECASE)
_BLOCK_TAG = re.compile(r"<(?:br|/p|/div|/li|/tr|/h[1-6])\b[^<>]*>", re.IGNORECASE)
_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{1,6}|#x[0-9a-fA-F]{1,6});")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]{2,}")
_ODD_SPACES = re.compile(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000]")
_BLANK_LINES = re.compile(r"\n{3,}")
_UNTIDY = ("  ", "\t", "\r", " \n", "\n\n\n")  # substrings normalize_whitespace would change
BOILERPLATE_MIN_CHARS = 20  # shorter repeated lines ("Thanks!", "Answer:") are content, not boilerplate


def fix_unicode(text: str) -> str:
    """Repair mojibake and broken escapes (ftfy); curly quotes and ligatures are left as written."""
    if text.isascii() and "&" not in text and "\x1b" not in text:
        return text  # nothing ftfy would change; skips its cost for most rows
    return ftfy.fix_text(text, uncurl_quotes=False, fix_latin_ligatures=False, fix_character_width=False)


def strip_html(text: str) -> str:
    """Drop HTML tags (scripts and styles with their content), keeping line breaks and unescaping."""
    if "<" not in text:
        return text
    stripped = _SCRIPT.sub("", text)
    stripped = _BLOCK_TAG.sub("\n", stripped)
    stripped = _TAG.sub("", stripped)
    if stripped == text:
        return text
    return _ENTITY.sub(lambda match: html.unescape(match.group()), stripped)


def normalize_whitespace(text: str) -> str:
    """Unix line ends, no trailing spaces, runs of spaces inside lines collapsed, ≤ 1 blank line."""
    # Most texts are tidy already; substring checks (in C) are far cheaper than the fix.
    tidy = not any(piece in text for piece in _UNTIDY) and text == text.strip()
    if tidy and (text.isascii() or _ODD_SPACES.search(text) is None):
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_INNER_SPACES.sub(" ", line).rstrip() for line in text.split("\n")]
    text = _ODD_SPACES.sub(" ", "\n".join(lines))
    return _BLANK_LINES.sub("\n\n", text).strip()


def count_lines(texts_per_row: Iterable[Iterable[str]]) -> Counter[str]:
    """How many rows hold each (stripped, long enough) line; a row counts a line once."""
    counts: Counter[str] = Counter()
    for texts in texts_per_row:
        lines = {line.strip() for text in texts for line in text.split("\n")}
        counts.update(line for line in lines if len(line) >= BOILERPLATE_MIN_CHARS)
    return counts


def boilerplate_lines(counts: Counter[str], rows: int, min_share: float, min_rows: int = 5) -> set[str]:
    """Lines found in at least `min_share` of `rows` (and at least `min_rows` rows)."""
    floor = max(min_rows, int(min_share * rows))
    return {line for line, count in counts.items() if count >= floor}


def remove_lines(text: str, lines: set[str]) -> str:
    """`text` without the given lines (compared stripped); a text that is nothing but them is kept."""
    if not lines:
        return text
    kept = [line for line in text.split("\n") if line.strip() not in lines]
    if len(kept) == text.count("\n") + 1 or not any(line.strip() for line in kept):
        return text
    return "\n".join(kept).strip()
