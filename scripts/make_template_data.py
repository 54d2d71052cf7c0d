"""Write the sample dataset of every project template (`tunesmith init --template NAME`).

Each template's data is made by its module in scripts/template_data/ from invented businesses, products
and people (nothing real, phone numbers and emails from ranges reserved for examples), with a fixed seed,
and committed as tunesmith/project/templates/NAME/data/examples.jsonl so that `tunesmith init` works
offline and without this script.

Run: python scripts/make_template_data.py [NAME ...]   (every template when none is named)
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

from template_data import (
    Row,
    brand_voice,
    intent_routing,
    local_marketing,
    moderation,
    recommendations,
    summarisation,
    support_replies,
)

TEMPLATES: dict[str, Callable[[random.Random], list[Row]]] = {
    "brand-voice": brand_voice.generate,
    "support-replies": support_replies.generate,
    "intent-routing": intent_routing.generate,
    "summarisation": summarisation.generate,
    "moderation": moderation.generate,
    "recommendations": recommendations.generate,
    "local-marketing": local_marketing.generate,
}
OUT = Path(__file__).resolve().parents[1] / "tunesmith" / "project" / "templates"


def sample_rows(name: str) -> list[Row]:
    """The template's rows, each once (a draw that repeats an earlier row is left out), shuffled."""
    rows = list(
        {
            json.dumps(row, sort_keys=True): row
            for row in TEMPLATES[name](random.Random(f"tunesmith-template-{name}"))
        }.values()
    )
    random.Random(0).shuffle(rows)
    return rows


def main(names: list[str]) -> None:
    for name in names or list(TEMPLATES):
        rows = sample_rows(name)
        path = OUT / name / "data" / "examples.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        print(f"{name}: {len(rows)} examples -> {path.relative_to(OUT.parents[2])}")


if __name__ == "__main__":
    main(sys.argv[1:])
