"""The language signal of a window of served requests: which languages the prompts and answers are in,
how often an answer is not in its prompt's language, and the alerts when either moves. Pure.

Owns: a small language detector, the per-window shares and mismatch rate, and comparing them with the
previous window. Does not own: reading traffic (see `check`) or the other output signals (`signals`).

Why a hand-made detector: none of langdetect, langid, fasttext or lingua is a tunesmith dependency,
and the monitor must run offline with nothing downloaded. The signal only needs to tell a window's
main languages apart and notice an answer in another language than its prompt, which the writing
system settles for most languages (Hangul is Korean, kana Japanese, Han alone Chinese, Greek, Hebrew,
Arabic, Devanagari, Thai), and frequent function words (`languages.yaml`) settle for the Latin and
Cyrillic ones it lists. A text it cannot place (a number, code, "ok", a language not listed) is
`und` (undetermined): it has a share, but is never a mismatch and never tested for a shift. Arabic-script Persian or
Urdu is reported as `ar`, Devanagari Marathi or Nepali as `hi`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from functools import cache
from importlib import resources
from statistics import NormalDist
from typing import Any

import yaml

from tunesmith.monitor.signals import RATE_ALARM, rise_p_value

__all__ = ["UNDETERMINED", "compare_languages", "detect_language", "language_signals"]

UNDETERMINED = "und"  # ISO 639-2's code for "undetermined"
_SCRIPT_LANGUAGES = {"HANGUL": "ko", "GREEK": "el", "HEBREW": "he", "ARABIC": "ar", "DEVANAGARI": "hi",
                     "THAI": "th", "CJK": "zh"}  # fmt: skip
_KANA = ("HIRAGANA", "KATAKANA")
_WORD = re.compile(r"\w+")


@cache
def _stopwords() -> dict[str, frozenset[str]]:
    text = resources.files("tunesmith.monitor").joinpath("languages.yaml").read_text(encoding="utf-8")
    return {
        language: frozenset(str(word) for word in words) for language, words in yaml.safe_load(text).items()
    }


def _scripts(text: str) -> Counter[str]:
    """Letters per writing system: the first word of each letter's Unicode name (LATIN, CJK, ...)."""
    return Counter(unicodedata.name(char, "UNKNOWN").split()[0] for char in text if char.isalpha())


def detect_language(text: str) -> str:
    """The ISO 639-1 code of `text`'s language (`en`, `fr`, `ja` ...), or `und` when it cannot tell."""
    scripts = _scripts(text)
    if not scripts:
        return UNDETERMINED
    script = scripts.most_common(1)[0][0]
    if script in (*_KANA, "CJK"):
        return "ja" if any(scripts[kana] for kana in _KANA) else "zh"
    if script in _SCRIPT_LANGUAGES:
        return _SCRIPT_LANGUAGES[script]
    if script not in ("LATIN", "CYRILLIC"):
        return UNDETERMINED
    words = _WORD.findall(text.lower())
    hits = Counter({language: sum(word in stop for word in words) for language, stop in _stopwords().items()})
    ranked = hits.most_common(2)
    if ranked[0][1] == 0 or ranked[0][1] == ranked[1][1]:  # no function word, or a tie
        return UNDETERMINED
    return ranked[0][0]


def _shares(languages: list[str]) -> dict[str, dict[str, Any]]:
    counts = Counter(languages)
    return {
        language: {"count": count, "n": len(languages), "rate": count / len(languages)}
        for language, count in counts.most_common()
    }


def language_signals(requests: list[tuple[str, list[str]]]) -> dict[str, Any]:
    """Shares of prompt and answer languages over `(prompt text, answers)` pairs (the logged requests),
    and the mismatch rate: answers in another language than their prompt, where both are determined."""
    prompts = [detect_language(prompt) for prompt, _ in requests]
    answers = [[detect_language(answer) for answer in outputs] for _, outputs in requests]
    pairs = [
        (prompt, answer)
        for prompt, languages in zip(prompts, answers, strict=True)
        for answer in languages
        if UNDETERMINED not in (prompt, answer)
    ]
    mismatches = sum(prompt != answer for prompt, answer in pairs)
    return {
        "prompts": _shares(prompts),
        "answers": _shares([language for languages in answers for language in languages]),
        "mismatch": {
            "count": mismatches,
            "n": len(pairs),
            "rate": mismatches / len(pairs) if pairs else None,
        },
    }


def _shift_alerts(side: str, current: dict[str, Any], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """Each language whose share of the determined `side` (prompts or answers) changed significantly:
    two-sided two-proportion z-test, Bonferroni-corrected over the languages tested. Undetermined texts
    are left out, so a rise of empty answers (an alert of its own) does not move every share."""
    now = {lang: share["count"] for lang, share in current[side].items() if lang != UNDETERMINED}
    before = {lang: share["count"] for lang, share in previous[side].items() if lang != UNDETERMINED}
    n_now, n_before = sum(now.values()), sum(before.values())
    languages = sorted(set(now) | set(before))
    alerts = []
    for language in languages if n_now and n_before else []:
        share_now, share_before = now.get(language, 0) / n_now, before.get(language, 0) / n_before
        pooled = (now.get(language, 0) + before.get(language, 0)) / (n_now + n_before)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / n_now + 1 / n_before))
        if spread == 0:
            continue
        p_value = 2 * (1 - NormalDist().cdf(abs(share_now - share_before) / spread))
        if p_value < RATE_ALARM / len(languages):
            alerts.append({
                "kind": f"{side[:-1]}_language_shift",
                "message": f"{language} share of {side} moved from {share_before:.1%} to {share_now:.1%} "
                f"(p={p_value:.2g}, {len(languages)} languages tested)",
                "data": {"language": language, "side": side, "previous": share_before, "current": share_now,
                         "p_value": p_value},
            })  # fmt: skip
    return alerts


def compare_languages(current: dict[str, Any], previous: dict[str, Any]) -> list[dict[str, Any]]:
    """Alerts: the mismatch rate rose significantly (one-sided, p < RATE_ALARM, as the other rates), or
    a language's share of the prompts or the answers moved."""
    alerts = []
    p_value = rise_p_value(current["mismatch"], previous["mismatch"])
    if p_value is not None and p_value < RATE_ALARM:
        now, before = current["mismatch"], previous["mismatch"]
        alerts.append({
            "kind": "language_mismatch_rate",
            "message": f"answers not in their prompt's language rose from {before['rate']:.1%} to "
            f"{now['rate']:.1%} (p={p_value:.2g})",
            "data": {"previous": before, "current": now, "p_value": p_value},
        })  # fmt: skip
    return alerts + _shift_alerts("prompts", current, previous) + _shift_alerts("answers", current, previous)
