"""brand-voice: copy in one client's voice, as an agency keeps one adapter per client.

The client is Fernhill Tea Co., a made-up tea merchant whose voice guide says: calm and sensory, the
reader addressed as "you", British spelling, no exclamation marks, the tea's tasting notes in every
piece, and "Brew slowly." at the end of everything longer than a subject line. Briefs come in for six
channels (Instagram caption, product page opener, newsletter opener, email subject line, a reply to a
review, a shelf card) about the client's teas and occasions.
"""

from __future__ import annotations

import random

from template_data import Row, chat

SYSTEM = "You write for Fernhill Tea Co. Follow the Fernhill voice guide."
SIGN_OFF = "Brew slowly."

# name, kind, notes, origin
TEAS = [
    ("Smoky Lapsang", "black tea", "pine smoke and dark cherry", "Fujian"),
    ("First Flush Darjeeling", "black tea", "muscatel grape and spring meadow", "Darjeeling"),
    ("Morning Assam", "black tea", "malt and honeyed toast", "Assam"),
    ("Jade Sencha", "green tea", "cut grass and sea air", "Shizuoka"),
    ("Silver Needle", "white tea", "apricot skin and fresh hay", "Fujian"),
    ("Roasted Hojicha", "roasted green tea", "toasted hazelnut and cocoa", "Kyoto"),
    ("Iron Goddess Oolong", "oolong", "orchid and buttered pastry", "Anxi"),
    ("Moroccan Mint", "green tea blend", "cool spearmint and gunpowder green", "our Bristol blending room"),
    ("Chamomile Meadow", "herbal infusion", "hay, apple and chamomile flowers", "Egypt"),
    ("Rooibos Vanilla", "caffeine-free infusion", "vanilla pod and red bush", "the Cederberg"),
    ("Earl Grey Blue", "black tea blend", "bergamot and cornflower", "our Bristol blending room"),
    ("Ginger Root Chai", "spiced black tea", "fresh ginger, cardamom and clove", "Kerala"),
    ("Genmaicha", "green tea with toasted rice", "popcorn and seaweed", "Uji"),
    ("Golden Yunnan", "black tea", "sweet potato and cocoa", "Yunnan"),
    ("Lemon Verbena", "herbal infusion", "lemon zest and soft green leaves", "Provence"),
    ("Ceylon Highgrown", "black tea", "citrus peel and brisk malt", "Nuwara Eliya"),
]
OCCASIONS = [
    ("a new harvest has arrived", "new harvest"),
    ("it is back in stock", "restock"),
    ("it is part of the autumn gift box", "gift box"),
    ("we are pouring it at a free tasting on Saturday", "tasting"),
    ("it now comes in a recyclable tin", "new tin"),
]
REVIEWERS = ["Amelia", "Rohan", "Grace", "Tomasz", "Nia", "Callum", "Leila", "Hugh", "Saoirse", "Ken"]


def _brief(channel: str, tea: tuple[str, ...], occasion: tuple[str, str], reviewer: str) -> str:
    name, kind = tea[0], tea[1]
    what = occasion[0]
    return {
        "instagram": f"Instagram caption for {name}: {what}.",
        "product": f"Opening paragraph for the {name} product page ({kind}).",
        "newsletter": f"Newsletter opener: {name}, because {what}.",
        "subject": f"Email subject line about {name} ({occasion[1]}).",
        "review": f"Reply to {reviewer}'s five-star review of {name}.",
        "shelf": f"Shelf card for {name} in the shop.",
    }[channel]


def _copy(
    rng: random.Random, channel: str, tea: tuple[str, ...], occasion: tuple[str, str], reviewer: str
) -> str:
    name, kind, notes, origin = tea
    if channel == "instagram":
        moment = rng.choice(
            ["the first cup of the morning", "a slow Sunday", "the hour after lunch", "a grey afternoon"]
        )
        return f"{name}, and {occasion[0]}. Notes of {notes}, from {origin}. Made for {moment}. {SIGN_OFF}"
    if channel == "product":
        return (
            f"{name} is a {kind} from {origin}. In the cup you will find {notes}, "
            f"{rng.choice(['unhurried and clear', 'gentle and long', 'quiet and deep'])}. "
            f"Steep it for {rng.choice(['three', 'four', 'two'])} minutes and let it settle. {SIGN_OFF}"
        )
    if channel == "newsletter":
        season = rng.choice(
            ["This month", "This week", "As the evenings draw in", "As the mornings brighten"]
        )
        return f"{season}, {occasion[0]}: {name}. You will taste {notes}. We think it is worth a quiet moment. {SIGN_OFF}"
    if channel == "subject":
        return rng.choice([f"{name}: {notes}", f"Your next cup: {name}", f"{name}, {occasion[1]}"])
    if channel == "review":
        return (
            f"Thank you, {reviewer}. We are glad {name} found its way to your cup. Its {notes} are "
            f"{rng.choice(['our favourite too', 'why we chose it', 'what we taste for'])}. {SIGN_OFF}"
        )
    return f"{name.upper()}\n{kind.capitalize()}, {origin}.\nNotes of {notes}.\n{SIGN_OFF}"


def generate(rng: random.Random) -> list[Row]:
    rows = []
    # Channels whose brief names an occasion get two occasions, a review two reviewers, the rest one brief.
    plan = [("instagram", 2), ("newsletter", 2), ("subject", 2), ("review", 2), ("product", 1), ("shelf", 1)]
    for tea in TEAS:
        for channel, count in plan:
            for occasion, reviewer in zip(
                rng.sample(OCCASIONS, count), rng.sample(REVIEWERS, count), strict=True
            ):
                brief = _brief(channel, tea, occasion, reviewer)
                # `product` keeps every brief about one tea in one split (prepare.group_by)
                rows.append(
                    {**chat(SYSTEM, brief, _copy(rng, channel, tea, occasion, reviewer)), "product": tea[0]}
                )
    return rows
