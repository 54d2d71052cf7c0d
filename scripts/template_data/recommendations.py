"""recommendations: the personalised blurb under a title a viewer is shown, for Lumen, a made-up streaming service.

Each example gives what the viewer watched recently and the title the recommender picked. Lumen's blurb
format: "Because you watched A and B:" naming the two recent titles that share the pick's genre (or,
when none does, the most recent one), then the title with year and runtime, one line on the premise,
and the mood tag. The catalogue is invented, so the facts have to come from the prompt.
"""

from __future__ import annotations

import random

from template_data import Row, chat

SYSTEM = (
    "You write Lumen's personalised recommendation blurbs. Use the viewer's history and the title's facts."
)

# title, genre, year, runtime, premise, mood
CATALOGUE = [
    (
        "The Lantern Keepers",
        "mystery",
        2021,
        "8 episodes",
        "a lighthouse family hides a century-old crime",
        "slow-burn",
    ),
    (
        "Salt & Ember",
        "mystery",
        2023,
        "112 min",
        "a chef investigates a poisoning at her own restaurant",
        "twisty",
    ),
    ("Blackwater Lane", "mystery", 2019, "6 episodes", "a retired detective reopens her first case", "moody"),
    ("Quiet Hours", "mystery", 2022, "98 min", "a night-shift nurse notices patients vanishing", "tense"),
    ("Orbit of Ash", "sci-fi", 2024, "10 episodes", "miners on a dying moon find a signal", "epic"),
    ("The Long Relay", "sci-fi", 2020, "124 min", "a message takes 40 years to cross the ship", "thoughtful"),
    ("Paper Robots", "sci-fi", 2022, "8 episodes", "a teenager builds a friend from scrap", "heartfelt"),
    ("Cold Vector", "sci-fi", 2018, "109 min", "an AI pilot refuses its last order", "tense"),
    ("Sunday Roast", "comedy", 2021, "6 episodes", "three siblings run their late dad's pub", "warm"),
    ("Overbooked", "comedy", 2023, "94 min", "two wedding planners book the same castle", "chaotic"),
    (
        "The Allotment",
        "comedy",
        2019,
        "12 episodes",
        "rival gardeners compete for the village prize",
        "gentle",
    ),
    ("Late Checkout", "comedy", 2024, "101 min", "a hotel night porter covers for his guests", "silly"),
    (
        "Wild Atlantic",
        "documentary",
        2022,
        "5 episodes",
        "a year on Ireland's western coast",
        "awe-inspiring",
    ),
    (
        "The Last Weavers",
        "documentary",
        2020,
        "88 min",
        "the final mill workers of a Yorkshire town",
        "moving",
    ),
    ("Deep Roots", "documentary", 2023, "4 episodes", "how ancient forests talk underground", "calming"),
    ("Street Food Lines", "documentary", 2021, "8 episodes", "night markets from Taipei to Lagos", "lively"),
    ("Iron & Lace", "drama", 2020, "7 episodes", "two sisters split by a factory strike", "sweeping"),
    ("The Understudy", "drama", 2023, "117 min", "a stand-in takes over the lead role", "bittersweet"),
    ("Harbour Lights", "drama", 2021, "9 episodes", "a fishing town faces the last season", "tender"),
    ("Second Chances", "drama", 2019, "105 min", "a prisoner trains guide dogs", "uplifting"),
]
MOOD_LINES = {
    "slow-burn": "One to savour", "twisty": "Keep guessing", "moody": "Best with the lights low",
    "tense": "Edge-of-your-seat", "epic": "Big-screen scale", "thoughtful": "Stays with you",
    "heartfelt": "Bring tissues", "warm": "Feel-good", "chaotic": "Pure chaos", "gentle": "Easy watching",
    "silly": "Daft fun", "awe-inspiring": "Breathtaking", "moving": "Quietly powerful", "calming": "Wind-down viewing",
    "lively": "Come hungry", "sweeping": "Epic drama", "bittersweet": "Bittersweet", "tender": "Tender",
    "uplifting": "Uplifting",
}  # fmt: skip
VIEWERS = ["Jess", "Arun", "Molly", "Kofi", "Niamh", "Piotr", "Zainab", "Ethan", "Rosa", "Liam"]


def _blurb(history: list[tuple[object, ...]], pick: tuple[object, ...]) -> str:
    same = [str(title[0]) for title in history if title[1] == pick[1]][:2]
    because = " and ".join(same) if same else str(history[0][0])
    title, _, year, runtime, premise, mood = pick
    return f"Because you watched {because}: {title} ({year}, {runtime}), where {premise}. {MOOD_LINES[str(mood)]}."


def generate(rng: random.Random) -> list[Row]:
    rows = []
    for pick in CATALOGUE:
        for _ in range(8):
            others = [title for title in CATALOGUE if title != pick]
            history = rng.sample(others, 3)
            viewer = rng.choice(VIEWERS)
            watched = "\n".join(f"- {title[0]} ({title[1]})" for title in history)
            title, genre, year, runtime, premise, mood = pick
            facts = f"{title}: {genre}, {year}, {runtime}. Premise: {premise}. Mood: {mood}."
            user = f"Viewer: {viewer}\nRecently watched (most recent first):\n{watched}\nRecommend: {facts}"
            rows.append({**chat(SYSTEM, user, _blurb(history, pick)), "title": title})
    return rows
