"""The review sheet: a few test examples with every model's answer and the rubric a person fills in.

Owns: choosing the examples (evenly spaced through the test split, so the same ones every time) and
writing `review.md` from an evaluation folder's `predictions.jsonl`. Does not own: scoring (the metrics
and the LLM judge do that) or collecting the filled-in sheet. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.train.rundir import atomic_write_text


def write_review_sheet(eval_dir: Path, rubric: dict[str, str], examples: int) -> Path:
    """`eval_dir/review.md`: per chosen example the prompt, the reference, each model's answer, the rubric."""
    rows: dict[int, list[dict[str, str]]] = {}
    for line in (eval_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        rows.setdefault(row["index"], []).append(row)
    chosen = spaced_indices(len(rows), examples)
    lines = [
        "# Review sheet",
        "",
        "For each example, score every answer 1-5 on each criterion (5: fully meets it).",
        "",
        *(f"- **{name}**: {question}" for name, question in rubric.items()),
    ]
    models = [row["model"] for row in rows[chosen[0]]]
    for index in chosen:
        first, last = rows[index][0], rows[index][-1]  # the last model is prompted as the test set has it
        lines += ["", f"## Example {index} ({first['source']})", "", "**Prompt**", "", "```", last["prompt"].strip(),
                  "```", "", "**Reference**", "", _quote(first["reference"])]  # fmt: skip
        for row in rows[index]:
            lines += ["", f"**{row['model']}**", "", _quote(row["prediction"])]
        lines += ["", "| criterion | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
        lines += [f"| {name} |" + " |" * len(models) for name in rubric]
    path = eval_dir / "review.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def spaced_indices(count: int, wanted: int) -> list[int]:
    """`wanted` positions (at most `count`) evenly spaced through `range(count)`: the same ones every time."""
    return sorted({index * count // min(wanted, count) for index in range(min(wanted, count))})


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" for line in (text.strip() or "(empty)").splitlines())
