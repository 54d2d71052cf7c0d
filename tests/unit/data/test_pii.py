from __future__ import annotations

import pytest

from tunesmith.data.pii import find_pii, is_iban_valid, is_luhn_valid, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("write to jane.doe+x@mail.example.org today", "write to [EMAIL] today"),
        ("call +1 (555) 201-3344 or 555-201-3344", "call [PHONE] or [PHONE]"),
        ("ring +44 20 7946 0958 after six", "ring [PHONE] after six"),
        ("card 4111 1111 1111 1111, amex 3782 822463 10005", "card [CARD], amex [CARD]"),
        ("pay GB82 WEST 1234 5698 7654 32 or DE89370400440532013000", "pay [IBAN] or [IBAN]"),
        ("hosts 192.168.1.20 and 2001:db8::1", "hosts [IP] and [IP]"),
        ("the server is 10.0.0.7. Restart it.", "the server is [IP]. Restart it."),
        ("ssn 123-45-6789", "ssn [SSN]"),
    ],
    ids=["email", "phone", "phone_intl", "card", "iban", "ip", "ip_ending_a_sentence", "ssn"],
)
def test_each_kind_is_found_and_replaced_by_its_placeholder(text: str, expected: str) -> None:
    assert redact(text, find_pii(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails Luhn
        "iban GB82 WEST 1234 5698 7654 33",  # fails mod 97
        "ip 999.1.1.1 and version 1.2.3.4.5",
        "ssn 000-12-3456 and 666-12-3456",  # never issued
        "1000-200-400=<<1000-200-400=400>>400 pounds, 14,000-3,920-1,000=9,080",  # GSM8K arithmetic
        "order 20240115 at 12:30:45, ratio 3:4:5, total 1,234.56",
    ],
)
def test_numbers_that_only_look_like_personal_data_are_left_alone(text: str) -> None:
    assert find_pii(text) == []


def test_checksums() -> None:
    assert is_luhn_valid("4111111111111111") and not is_luhn_valid("4111111111111112")
    assert is_iban_valid("GB82 WEST 1234 5698 7654 32") and not is_iban_valid("GB82 WEST 1234 5698 7654 31")
