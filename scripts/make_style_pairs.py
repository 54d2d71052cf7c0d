"""Write a preference task with a known answer: the café's replies signed off in its house style are
preferred over the same replies signed off generically.

The demo conversations (tunesmith/data/demo, written by make_demo_data.py) all end with the house
sign-off line. This script writes, into OUT:
  sft.jsonl         the training conversations signed off generically ("Best regards, the support
                    team"): an SFT adapter trained on them learns the café's facts, voice and to sign
                    off, but not the house sign-off;
  pairs_train.jsonl the same conversations as preference pairs: chosen with the house sign-off,
                    rejected with the generic one (the answers differ in their sign-off only);
  pairs_val.jsonl   the demo validation split as pairs (held-out preference accuracy);
  test.jsonl        the demo test conversations (held-out prompts for greedy generation).
Prompts keep their system turn. Deterministic: the same files every run.

Run: python scripts/make_style_pairs.py OUT [--pairs N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEMO = Path(__file__).resolve().parents[1] / "tunesmith" / "data" / "demo"
SIGN_OFF = "Warmly, the Bramble & Bean crew"
GENERIC = "Best regards, the support team"


def generic(reply: str) -> str:
    """The reply with a generic sign-off in place of the house one."""
    return reply.replace(SIGN_OFF, GENERIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--pairs", type=int, default=200, help="training pairs (at most 200)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    splits = {
        name: [json.loads(line)["messages"] for line in (DEMO / f"{name}.jsonl").read_text().splitlines()]
        for name in ("train", "val", "test")
    }
    with (args.out / "sft.jsonl").open("w", encoding="utf-8") as sft:
        for messages in splits["train"]:
            plain = [*messages[:-1], {"role": "assistant", "content": generic(messages[-1]["content"])}]
            sft.write(json.dumps({"messages": plain}) + "\n")
    for split, name, limit in (("train", "pairs_train", args.pairs), ("val", "pairs_val", None)):
        with (args.out / f"{name}.jsonl").open("w", encoding="utf-8") as pairs:
            for messages in splits[split][:limit]:
                reply = messages[-1]["content"]
                row = {"prompt": messages[:-1], "chosen": reply, "rejected": generic(reply)}
                pairs.write(json.dumps(row) + "\n")
    (args.out / "test.jsonl").write_text((DEMO / "test.jsonl").read_text())


if __name__ == "__main__":
    main()
