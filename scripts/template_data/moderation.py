"""moderation: the forum comments of Sprout, a made-up gardening app, labelled by its moderation policy.

Four labels: allow (gardening talk, questions, disagreement stated politely, even blunt advice), spam
(selling, links, crypto and follower schemes), harassment (insults aimed at another member) and
personal_data (someone's phone number, email or home address posted). The hard cases are on purpose:
a blunt but civil reply is allow, a member sharing their own shop link is spam, a slug is called an
idiot without anyone being harassed. Phone numbers and emails are from ranges reserved for examples.
"""

from __future__ import annotations

import random

from template_data import Row

PLANTS = ["tomatoes", "courgettes", "roses", "dahlias", "basil", "runner beans", "strawberries", "lavender",
          "hostas", "sweet peas", "chillies", "apple trees"]  # fmt: skip
PESTS = ["slugs", "aphids", "vine weevils", "whitefly", "pigeons", "blight"]
MEMBERS = ["GreenThumbGail", "allotment_andy", "PlotHolder42", "Marigold_Mo", "compost_king", "FernFan",
           "veg_patch_vic", "BeeBuddy"]  # fmt: skip

TEMPLATES = {
    "allow": [
        "My {plant} are yellowing at the bottom leaves, is that overwatering?",
        "Anyone else losing the battle with {pest} this year?",
        "Top tip: water {plant} in the morning, not at night.",
        "I disagree with {member}, I've never needed to feed my {plant} that often.",
        "Honestly that's the wrong compost for {plant}, use something free-draining instead.",
        "These {pest} are absolute idiots, they ate everything in one night.",
        "First harvest of {plant} today, so pleased!",
        "What's the best month to prune {plant} in the north?",
    ],
    "spam": [
        "Cheap {plant} seeds, 90% off, visit bestseeds-deals.example now!!!",
        "Make £{money} a day from home growing {plant}, DM me to find out how.",
        "Buy followers for your garden account, {count} for £{price}.",
        "Invest in GardenCoin before it goes to the moon, up {count}% this week, link in bio.",
        "Check out my shop for {plant} feed, discount code SPROUT20 at shop.example.",
        "FREE iPhone for the first {count} people who click here, no catch.",
        "Get rid of {pest} forever with this one product, order at pestgone.example.",
        "Earn £{money} a week reviewing garden tools, sign up at reviews-pay.example.",
    ],
    "harassment": [
        "{member} you are a complete idiot, stop posting.",
        "Nobody cares about your {plant}, {member}, you useless clown.",
        "{member} is a liar and a fraud, everyone block her.",
        "Shut up {member}, your garden is as ugly as you are.",
        "Go away {member}, nobody wants you or your {plant} on this forum.",
        "@{member} you're pathetic, no wonder your {plant} died.",
        "{member} should be banned, what a moron.",
        "Lol {member} can't even grow {plant}, what a loser.",
    ],
    "personal_data": [
        "{member} lives at 14 Orchard Close, go and tell her yourself.",
        "Here's {member}'s number if anyone wants {plant} cuttings: 07700 900{digits}.",
        "Email {member} directly at {handle}@example.com, she never checks messages here.",
        "The guy selling {plant} is at 22 Elm Road, his mobile is 07700 900{digits}.",
        "{member}'s real name is Sarah Jenkins and she works at the garden centre on the high street.",
        "Posting {member}'s address so people can collect the {plant}: 3 Wren Lane.",
        "Call {member} on 07700 900{digits}, he owes me money for the {plant}.",
        "If you want {plant} seeds contact {member} at {handle}@example.com or 07700 900{digits}.",
    ],
}

TAILS = ["", " Just saying.", " Seriously.", " Thoughts?", " (posting again in case)", "!!", " Anyway.", " x"]


def generate(rng: random.Random) -> list[Row]:
    rows = []
    for label, templates in TEMPLATES.items():
        for template in templates:
            for _ in range(7):
                member = rng.choice(MEMBERS)
                slots = {"plant": rng.choice(PLANTS), "pest": rng.choice(PESTS), "member": member,
                         "digits": f"{rng.randint(0, 999):03d}", "handle": member.lower(),
                         "money": rng.choice([200, 350, 500, 750, 1000]), "count": rng.choice([50, 100, 500, 1000]),
                         "price": rng.choice([3, 5, 9, 10])}  # fmt: skip
                text = template.format(**slots) + rng.choice(TAILS)
                rows.append({"text": text, "label": label})
    return rows
