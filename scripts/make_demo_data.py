"""Generate the quickstart's demo dataset: support replies in the house voice of a fictional café.

Bramble & Bean is a made-up neighbourhood café and bakery. Customers write in with questions; the
café answers in one consistent voice and with facts (opening hours, allergens, policies) that a
generic model cannot know. That is the point of the demo: fine-tuning teaches the voice and the
facts, and the held-out scores show it.

Run: python scripts/make_demo_data.py  (writes tunesmith/data/demo/{train,val,test}.jsonl)
The output is deterministic (fixed seed) and committed, so the quickstart needs no script at run time.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

SYSTEM = "You are the customer-care voice of Bramble & Bean, a neighbourhood café and bakery. Reply to the customer."
SIGN_OFF = "Warmly, the Bramble & Bean crew"

NAMES = [
    "Maya",
    "Leo",
    "Priya",
    "Tom",
    "Aisha",
    "Jonas",
    "Chloe",
    "Mateo",
    "Hana",
    "Oscar",
    "Zara",
    "Ben",
    "Lucia",
    "Finn",
    "Amara",
    "Noah",
    "Ines",
    "Kai",
    "Ruth",
    "Sami",
    "Elena",
    "Dev",
    "Grace",
    "Theo",
    "Nadia",
    "Felix",
    "Rosa",
    "Omar",
    "Lena",
    "Hugo",
    "Mina",
    "Arlo",
    "Jade",
    "Iris",
    "Pablo",
    "Wren",
]
HOURS = {
    "Monday": "7am to 6pm",
    "Tuesday": "7am to 6pm",
    "Wednesday": "7am to 6pm",
    "Thursday": "7am to 8pm",
    "Friday": "7am to 8pm",
    "Saturday": "8am to 5pm",
    "Sunday": "9am to 3pm",
}
ALLERGENS = {
    "cardamom bun": "wheat, milk and egg",
    "almond croissant": "wheat, milk, egg and almonds",
    "sourdough loaf": "wheat only",
    "lemon drizzle slice": "wheat, milk and egg",
    "vegan brownie": "wheat and soy",
    "oat flat white": "oats",
    "chai latte": "milk",
    "cheese scone": "wheat, milk and egg",
    "banana bread": "wheat, egg and walnuts",
    "hot chocolate": "milk and soy",
}
ITEMS = list(ALLERGENS)


def _hours(rng: random.Random, name: str) -> tuple[str, str]:
    day = rng.choice(list(HOURS))
    asks = [
        f"Hi, what time do you open on {day}? - {name}",
        f"Are you open on {day}, and until when? Thanks, {name}",
        f"Hello! What are your hours on {day}? {name}",
        f"Quick one: when can I come by on {day}? - {name}",
        f"What are the opening hours this {day}? Cheers, {name}",
    ]
    reply = (
        f"Hi {name}! On {day}s we're open {HOURS[day]}. The first tray of cardamom buns comes out right at "
        f"opening, so come early! {SIGN_OFF}"
    )
    return rng.choice(asks), reply


def _order(rng: random.Random, name: str) -> tuple[str, str]:
    order, item = rng.randint(1000, 9999), rng.choice(ITEMS)
    asks = [
        f"Where is my order #{order}? I ordered a {item}. - {name}",
        f"Hi, just checking on order #{order} (one {item}). {name}",
        f"Is my {item} ready yet? Order number {order}. Thanks, {name}",
        f"Hello, any update on order #{order}? It's a {item}. - {name}",
    ]
    reply = (
        f"Hi {name}! Your order #{order} ({item}) is being packed right now and will be ready at the pickup "
        f"shelf within 15 minutes. {SIGN_OFF}"
    )
    return rng.choice(asks), reply


def _allergens(rng: random.Random, name: str) -> tuple[str, str]:
    item = rng.choice(ITEMS)
    asks = [
        f"What allergens are in the {item}? - {name}",
        f"Hi! I have allergies, what's in your {item}? {name}",
        f"Can you tell me the allergens in the {item}, please? Thanks, {name}",
        f"Is there anything I should know allergy-wise about the {item}? - {name}",
    ]
    reply = (
        f"Hi {name}! Our {item} contains {ALLERGENS[item]}. Everything is baked in one kitchen, so we can't "
        f"promise zero traces. {SIGN_OFF}"
    )
    return rng.choice(asks), reply


def _reservation(rng: random.Random, name: str) -> tuple[str, str]:
    size, day = rng.randint(3, 12), rng.choice(list(HOURS))
    asks = [
        f"Can I book a table for {size} on {day}? - {name}",
        f"Hi, do you take reservations? We'd be {size} people on {day}. {name}",
        f"Hello! Could you reserve a spot for a group of {size} this {day}? Thanks, {name}",
        f"Is it possible to reserve for {size} people on {day}? - {name}",
    ]
    reply = (
        f"Hi {name}! We don't take bookings, but for {size} people on {day} we'll happily push tables together "
        f"if you arrive before 10am. {SIGN_OFF}"
    )
    return rng.choice(asks), reply


def _complaint(rng: random.Random, name: str) -> tuple[str, str]:
    item = rng.choice(ITEMS)
    asks = [
        f"My {item} today was stale, really disappointing. - {name}",
        f"Not happy: the {item} I bought this morning was cold. {name}",
        f"The {item} wasn't great today, honestly. Thanks, {name}",
        f"I want to complain about the {item} I had earlier. - {name}",
    ]
    reply = (
        f"Hi {name}, we're so sorry your {item} wasn't right. Show this message at the counter and your next "
        f"{item} is on us. {SIGN_OFF}"
    )
    return rng.choice(asks), reply


def _catering(rng: random.Random, name: str) -> tuple[str, str]:
    guests = rng.choice([10, 15, 20, 25, 30, 40, 50, 60, 80, 100])
    asks = [
        f"Do you cater events? We have about {guests} guests. - {name}",
        f"Hi, could you do pastries for an office party of {guests}? {name}",
        f"We're planning a party for {guests} people, can you help with food? Thanks, {name}",
        f"Can Bramble & Bean cater for {guests} guests? - {name}",
    ]
    reply = (
        f"Hi {name}! We'd love to bake for {guests} guests. Email the date and your favourites to "
        f"hello@brambleandbean.example and we'll reply within one day. {SIGN_OFF}"
    )
    return rng.choice(asks), reply


def _loyalty(rng: random.Random, name: str) -> tuple[str, str]:
    asks = [
        f"Do you have a loyalty card? - {name}",
        f"Hi, is there a rewards scheme for regulars? {name}",
        f"How does your stamp card work? Thanks, {name}",
        f"Any discounts for people who come every day? - {name}",
    ]
    reply = (
        f"Hi {name}! Ask for a Bramble card at the counter: every ninth drink is free, and you get a slice of "
        f"cake on your birthday. {SIGN_OFF}"
    )
    return rng.choice(asks), reply


INTENTS: list[Callable[[random.Random, str], tuple[str, str]]] = [
    _hours,
    _order,
    _allergens,
    _reservation,
    _complaint,
    _catering,
    _loyalty,
]


def generate(count: int, seed: int) -> list[dict[str, object]]:
    """`count` distinct examples in chat form, intents balanced round-robin."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict[str, object]] = []
    while len(rows) < count:
        intent = INTENTS[len(rows) % len(INTENTS)]
        ask, reply = intent(rng, rng.choice(NAMES))
        if ask in seen:
            continue
        seen.add(ask)
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": ask},
            {"role": "assistant", "content": reply},
        ]
        rows.append({"messages": messages})
    return rows


def main() -> None:
    rows = generate(280, seed=7)
    random.Random(11).shuffle(rows)
    out = Path(__file__).resolve().parents[1] / "tunesmith" / "data" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    splits = {"train": rows[:200], "val": rows[200:240], "test": rows[240:]}
    for split, split_rows in splits.items():
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in split_rows)
        (out / f"{split}.jsonl").write_text(text, encoding="utf-8")
        print(f"{split}: {len(split_rows)} examples")


if __name__ == "__main__":
    main()
