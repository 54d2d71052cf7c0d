"""intent-routing: which queue a customer message goes to, for Kestrel Fibre, a made-up broadband provider.

Eight intents, each written many ways (short and long, polite and cross, with the details customers
add: amounts, months, rooms, devices, towns). The labels are the provider's own queue names, which a
generic model can only guess at; a few intents sit close together (slow speed vs an outage, upgrade vs
cancel) the way real routing data does.
"""

from __future__ import annotations

import random

from template_data import Row

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October"]
AMOUNTS = ["£12", "£38.50", "£45", "£60", "£27.99", "£90", "£15", "£52"]
ROOMS = ["the bedroom", "the kitchen", "my office upstairs", "the garden room", "the loft", "the living room"]
DEVICES = ["my laptop", "the smart TV", "my phone", "the games console", "my work PC", "the tablet"]
TOWNS = ["Leeds", "Bristol", "Norwich", "Cardiff", "York", "Exeter", "Derby", "Preston", "Bath", "Hull"]
OPENERS = ["", "Hi, ", "Hello, ", "Hi there. ", "Morning. ", "Quick question: "]

TEMPLATES = {
    "billing": [
        "why is my bill {amount} this month when it's usually less?",
        "I was charged {amount} in {month} and I don't know what for.",
        "can you explain the extra {amount} on my latest invoice?",
        "my direct debit went out twice in {month}.",
        "I want to change the date my bill is paid.",
        "how do I get a copy of my {month} bill?",
    ],
    "outage": [
        "the internet is completely down, all the lights on the router are red.",
        "no connection at all since this morning, is there an outage in {town}?",
        "everything dropped at about 7pm and nothing works.",
        "my broadband has been dead for two days now.",
        "is there a fault in {town}? Nobody on our street has internet.",
        "the router says no service and restarting didn't help.",
    ],
    "slow_speed": [
        "the connection works but it's really slow in {room}.",
        "I'm paying for 500Mb and getting about 20 on {device}.",
        "video calls keep freezing on {device} every evening.",
        "speeds drop massively after 8pm, it's unusable.",
        "downloads crawl on {device} even though the line is up.",
        "wifi in {room} is painfully slow, can you help?",
    ],
    "move_home": [
        "we're moving to {town} in {month}, can I take my broadband with me?",
        "I'm moving house next month, what do I need to do?",
        "how do I transfer my contract to a new address in {town}?",
        "we move on the 14th of {month}, can the new place be connected the same day?",
        "do you cover {town}? We're relocating there soon.",
        "I need to update my address because I'm moving.",
    ],
    "upgrade": [
        "can I get a faster package? The 150Mb one isn't enough any more.",
        "what would it cost to go up to 900Mb?",
        "I'd like to add the TV bundle to my plan.",
        "is there a plan with a better router for {room}?",
        "we work from home now, what's your fastest option?",
        "can I upgrade before my contract ends in {month}?",
    ],
    "cancel": [
        "I want to cancel my contract when it ends in {month}.",
        "how much would it cost to leave early?",
        "please close my account, I'm switching provider.",
        "I'm moving abroad and need to cancel everything.",
        "what's the notice period to cancel?",
        "can you send me the cancellation form?",
    ],
    "router_setup": [
        "the new router arrived, how do I set it up?",
        "which cable goes where on the new hub?",
        "how do I change the wifi password on the router?",
        "I can't get {device} to connect to the new router.",
        "how do I set up a mesh booster for {room}?",
        "where do I find the admin login for the hub?",
    ],
    "complaint": [
        "this is the third engineer visit that hasn't fixed anything, I want to complain.",
        "your call centre hung up on me twice in {month}.",
        "I was promised a callback and nobody ever rang.",
        "I want to make a formal complaint about how I've been treated.",
        "the engineer didn't turn up and I took the day off work.",
        "I've been passed between departments for a week, this is unacceptable.",
    ],
}
CLOSERS = ["", " Thanks.", " Cheers.", " Please sort this out.", " Account number {account}.", " Ta."]


def generate(rng: random.Random) -> list[Row]:
    rows = []
    for label, templates in TEMPLATES.items():
        for template in templates:
            for _ in range(5):
                slots = {"amount": rng.choice(AMOUNTS), "month": rng.choice(MONTHS), "room": rng.choice(ROOMS),
                         "device": rng.choice(DEVICES), "town": rng.choice(TOWNS),
                         "account": f"KF{rng.randint(100000, 999999)}"}  # fmt: skip
                opener, body = rng.choice(OPENERS), template.format(**slots)
                if opener.endswith(". ") or not opener:
                    body = body[0].upper() + body[1:]
                text = opener + body + rng.choice(CLOSERS).format(**slots)
                rows.append({"text": text, "label": label})
    return rows
