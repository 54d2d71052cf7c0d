"""A seeded set of sentences, each holding one piece of personal data or one look-alike that must pass.

Look-alikes are what a support or shop answer is full of: order and ticket numbers, version strings,
dates and times, prices, hostnames and `@handles`. Every value is made here from a seed (cards pass
Luhn, IBANs pass mod 97), so the set is the same on every run and nothing is downloaded.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

from tunesmith.data.pii import is_luhn_valid

NAMES = ["jane", "omar", "li.wei", "a.smith", "mary-jo", "kofi", "ines_r", "t.nguyen", "sam+shop", "olga"]
DOMAINS = ["gmail.com", "corp.example.org", "mail.co.uk", "uni-bonn.de", "proton.me", "acme.io"]
TEMPLATES = [
    "Sure, you can reach them at {} if the parcel is late.",
    "My details: {}. Please update the account.",
    "Contact: {}",
    "I wrote {} on the form, is that right?",
    "The customer gave {} as their contact, then hung up.",
    "({}) was the value in the old record.",
]


@dataclass(frozen=True)
class Case:
    text: str
    value: str  # the planted value
    kind: str | None  # its PII kind; None: a look-alike that must pass


def _email(rng: random.Random) -> str:
    return f"{rng.choice(NAMES)}{rng.randint(1, 99) if rng.random() < 0.4 else ''}@{rng.choice(DOMAINS)}"


def _phone(rng: random.Random) -> str:
    digits = lambda n: "".join(rng.choice(string.digits) for _ in range(n))  # noqa: E731
    area, mid, last = str(rng.randint(201, 989)), digits(3), digits(4)
    return rng.choice([
        f"({area}) {mid}-{last}", f"{area}-{mid}-{last}", f"+1 {area} {mid} {last}", f"{area}.{mid}.{last}",
        f"+44 20 {digits(4)} {digits(4)}", f"+49 30 {digits(4)} {digits(4)}", f"+1 ({area}) {mid}-{last}",
    ])  # fmt: skip


def _card(rng: random.Random) -> str:
    while True:
        number = rng.choice(["4", "51", "52", "55"]) + "".join(rng.choice(string.digits) for _ in range(14))
        number = number[:16]
        if is_luhn_valid(number):
            break
    groups = [number[i : i + 4] for i in range(0, 16, 4)]
    return rng.choice([number, " ".join(groups), "-".join(groups)])


def _iban(rng: random.Random) -> str:
    country, length = rng.choice([("DE", 18), ("GB", 18), ("FR", 23), ("NL", 14)])
    if country == "GB":
        bban = rng.choice(["WEST", "NWBK", "BARC"]) + "".join(rng.choice(string.digits) for _ in range(14))
    elif country == "NL":
        bban = rng.choice(["ABNA", "RABO", "INGB"]) + "".join(rng.choice(string.digits) for _ in range(10))
    else:
        bban = "".join(rng.choice(string.digits) for _ in range(length))
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    check = 98 - int(numeric) % 97
    compact = f"{country}{check:02d}{bban}"
    return rng.choice([compact, " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))])


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    return f"2001:db8:{rng.randint(1, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"


def _ssn(rng: random.Random) -> str:
    return f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"


def _look_alike(rng: random.Random) -> str:
    return rng.choice([
        f"order #{rng.randint(10_000_000, 99_999_999)}", f"ticket INC-{rng.randint(100000, 999999)}",
        f"version {rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}",
        f"v{rng.randint(1, 5)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}-rc{rng.randint(1, 4)}",
        f"{rng.randint(2019, 2026)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{rng.randint(2019, 2026)}",
        f"{rng.randint(1, 28):02d}.{rng.randint(1, 12):02d}.{rng.randint(2019, 2026)}",
        f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        f"${rng.randint(1, 9)},{rng.randint(100, 999)}.{rng.randint(10, 99)}",
        f"SKU {rng.randint(1000, 9999)}-{rng.randint(100, 999)}", f"@{rng.choice(NAMES).replace('.', '_')}",
        f"www.{rng.choice(DOMAINS)}", f"support at {rng.choice(DOMAINS)}", "user@localhost",
        f"ratio {rng.randint(1, 9)}:{rng.randint(1, 9)}:{rng.randint(1, 9)}", f"room {rng.randint(100, 999)}",
        f"tracking {rng.randint(10**11, 10**12 - 1)}", f"build 2024.{rng.randint(1, 12)}.{rng.randint(1, 31)}",
        f"{rng.randint(100, 999)} {rng.randint(100, 999)} units", f"invoice {rng.randint(2024, 2026)}-{rng.randint(1000, 9999)}",
    ])  # fmt: skip


MAKERS = {"EMAIL": _email, "PHONE": _phone, "CARD": _card, "IBAN": _iban, "IP": _ip, "SSN": _ssn}


def pii_cases(seed: int = 0, per_kind: int = 40, look_alikes: int = 240) -> list[Case]:
    """`per_kind` sentences per PII kind and `look_alikes` sentences that must pass, shuffled."""
    rng = random.Random(seed)
    cases = [
        Case(rng.choice(TEMPLATES).format(value), value, kind)
        for kind, make in MAKERS.items()
        for value in (make(rng) for _ in range(per_kind))
    ]
    cases += [
        Case(rng.choice(TEMPLATES).format(value), value, None)
        for value in (_look_alike(rng) for _ in range(look_alikes))
    ]
    rng.shuffle(cases)
    return cases
