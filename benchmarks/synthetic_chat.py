"""Synthetic chat data for the data-preparation benchmark: dirty on purpose, deterministic.

    .venv/bin/python benchmarks/synthetic_chat.py --rows 100000 --out /tmp/chat.jsonl

Each row is a user/assistant chat of about 200 tokens (SmolLM2 tokenizer, template included). Mixed in,
at fixed rates: exact duplicates (3%), near-duplicates with a few words changed (3%), personal data
(emails, phones, Luhn-valid cards, IBANs, IPs, SSNs; 2%), HTML markup (2%), mojibake (1%), a
boilerplate footer line (2%), and rows with a cross-split leak candidate (same question, new answer; 1%).
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from pathlib import Path

_WORD_TEXT = (
    "the a of to and in is it you that he was for on are with as his they be at one have this from or had "
    "by hot word but what some we can out other were all there when up use your how said an each she which "
    "do their time if will way about many then them write would like so these her long make thing see him "
    "two has look more day could go come did number sound no most people my over know water than call first "
    "who may down side been now find any new work part take get place made live where after back little "
    "only round man year came show every good me give our under name very through just form sentence great "
    "think say help low line differ turn cause much mean before move right boy old too same tell does set "
    "three want air well also play small end put home read hand port large spell add even land here must big "
    "high such follow act why ask men change went light kind off need house picture try us again animal point "
    "mother world near build self earth father head stand own page should country found answer school grow "
    "study still learn plant cover food sun four between state keep eye never last let thought city tree "
    "cross farm hard start might story saw far sea draw left late run while press close night real life few "
    "north open seem together next white children begin got walk example ease paper group always music those "
    "both mark often letter until mile river car feet care second book carry took science eat room friend "
    "began idea fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl "
    "usual young ready above ever red list though feel talk bird soon body dog family direct pose leave song "
    "measure door product black short numeral class wind question happen complete ship area half rock order "
    "fire south problem piece told knew pass since top whole king space heard best hour better true during "
    "hundred five remember step early hold west ground interest reach fast verb sing listen six table travel "
    "less morning ten simple several vowel toward war lay against pattern slow center love person money serve "
    "appear road map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry "
    "dark machine note wait plan figure star box noun field rest correct able pound done beauty drive stood "
    "contain front teach week final gave green oh quick develop ocean warm free minute strong special mind "
    "behind clear tail produce fact street inch multiply nothing course stay wheel full force blue object "
    "decide surface deep moon island foot system busy test record boat common gold possible plane stead dry "
    "wonder laugh thousand ago ran check game shape equate miss brought heat snow tire bring yes distant fill "
    "east paint language among grand ball yet wave drop heart am present heavy dance engine position arm wide "
    "sail material size vary settle speak weight general ice matter circle pair include divide syllable felt "
    "perhaps pick sudden count square reason length represent art subject region energy hunt probable bed"
)
WORDS = _WORD_TEXT.split()
PII = [
    "Write to me at jane.doe{n}@example.com please.",
    "My number is +1 (555) 201-{n:04d}, call after six.",
    "Card 4111 1111 1111 1111 expires soon.",
    "Send it to IBAN GB82 WEST 1234 5698 7654 32 today.",
    "The server at 10.0.{a}.{b} is down.",
    "My SSN is 123-45-{n:04d} if you need it.",
]
FOOTER = "Sent from my phone. Please consider the environment before printing."


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choices(WORDS, k=words))
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, words: int) -> str:
    sentences = []
    while words > 0:
        length = min(words, rng.randint(8, 18))
        sentences.append(_sentence(rng, length))
        words -= length
    return " ".join(sentences)


def _dirty(rng: random.Random, text: str, index: int) -> str:
    roll = rng.random()
    if roll < 0.02:
        template = rng.choice(PII)
        return text + " " + template.format(n=index % 10000, a=index % 250, b=(index // 250) % 250)
    if roll < 0.04:
        return f"<p>{text}</p><br><div class='x'>{_sentence(rng, 6)}</div>"
    if roll < 0.05:
        return text.replace("e", "Ã©", 2) + " cafÃ© crÃ¨me"
    if roll < 0.07:
        return f"{text}\n{FOOTER}"
    return text


def generate(rows: int, seed: int = 0) -> Iterator[dict[str, object]]:
    """`rows` synthetic chats, duplicates and near-duplicates of earlier rows included."""
    rng = random.Random(seed)
    made: list[tuple[str, str]] = []
    for index in range(rows):
        roll = rng.random()
        if made and roll < 0.03:
            question, answer = rng.choice(made)
        elif made and roll < 0.06:
            question, answer = rng.choice(made)
            words = answer.split()
            for _ in range(3):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            answer = " ".join(words)
        elif made and roll < 0.07:
            question, _ = rng.choice(made)
            answer = _paragraph(rng, 110)
        else:
            question = _dirty(rng, _paragraph(rng, 45), index)
            answer = _dirty(rng, _paragraph(rng, 110), index)
            if len(made) < 20000:
                made.append((question, answer))
        yield {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with args.out.open("w", encoding="utf-8") as handle:
        for row in generate(args.rows, args.seed):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
