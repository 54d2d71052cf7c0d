"""The monitor's language signal: the detector, per-window shares and mismatch rate, and its alerts."""

from __future__ import annotations

import pytest

from tunesmith.monitor.language import compare_languages, detect_language, language_signals


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("Do you have oat milk?", "en"),
        ("Avez-vous du lait d'avoine ?", "fr"),
        ("Habt ihr Hafermilch?", "de"),
        ("¿Tienen leche de avena?", "es"),
        ("Avete latte di avena?", "it"),
        ("Vocês têm leite de aveia?", "pt"),
        ("Hebben jullie havermelk?", "nl"),
        ("У вас есть овсяное молоко?", "ru"),
        ("У вас є вівсяне молоко?", "uk"),
        ("オーツミルクはありますか", "ja"),
        ("你们有燕麦奶吗", "zh"),
        ("귀리 우유 있어요?", "ko"),
        ("Έχετε γάλα βρώμης;", "el"),
        ("ok", "und"),  # no function word: cannot tell
        ("42", "und"),
        ("", "und"),
    ],
)
def test_detect_language(text: str, language: str) -> None:
    assert detect_language(text) == language


def _window(pairs: list[tuple[str, str]]) -> dict[str, object]:
    return language_signals([(prompt, [answer]) for prompt, answer in pairs])


def test_answers_in_another_language_than_the_prompt_raise_an_alert() -> None:
    english = ("what time do you open", "we open at nine in the morning")
    french = ("à quelle heure ouvrez-vous", "nous ouvrons à neuf heures")
    answered_in_english = ("à quelle heure ouvrez-vous", "we open at nine in the morning")
    before = _window([english] * 150 + [french] * 50)
    assert before["prompts"]["en"]["rate"] == 0.75 and before["mismatch"]["rate"] == 0.0
    after = _window([english] * 150 + [french] * 30 + [answered_in_english] * 20)
    assert after["mismatch"] == {"count": 20, "n": 200, "rate": 0.1}
    alerts = compare_languages(after, before)  # English answers 75% -> 85%: not significant alone
    assert [alert["kind"] for alert in alerts] == ["language_mismatch_rate"]
    assert compare_languages(before, before) == []


def test_a_language_share_that_moves_raises_an_alert_but_empty_answers_do_not() -> None:
    english = ("what time do you open", "we open at nine in the morning")
    german = ("wann öffnen Sie", "wir öffnen um neun und es gibt Kaffee")
    before = _window([english] * 190 + [german] * 10)
    after = _window([english] * 120 + [german] * 80)
    kinds = {alert["kind"] for alert in compare_languages(after, before)}
    assert kinds == {"prompt_language_shift", "answer_language_shift"}
    emptied = _window([english] * 100 + [(english[0], "")] * 90 + [german] * 10)
    assert emptied["answers"]["und"]["count"] == 90
    assert compare_languages(emptied, before) == []  # empty answers alert as empty_rate, not here
