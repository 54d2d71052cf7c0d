"""LLM-as-judge: rubric scores (1-5 per criterion) and pairwise preference, by a local model or any
OpenAI-compatible endpoint (tunesmith's own server or a hosted model).

Owns: the judge prompts, the two judges (`EndpointJudge` asks for a short reply and reads the first
allowed option in it, a reply without one counts as unparseable and is reported, never guessed;
`LocalJudge` scores each option's log-likelihood, so it always answers), asking pairwise questions in
both orders to cancel position bias, and agreement of the judge with the reference metrics
(Spearman correlation of per-example scores; share of pairs where judge and metric prefer the same
answer). Does not own: which models are compared or the report files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.config import EvalTask
from tunesmith.data.records import Message
from tunesmith.data.render import render_text
from tunesmith.eval.label_search import score_best_labels
from tunesmith.eval.report import per_example_scores, read_scored, render_markdown
from tunesmith.train.rundir import atomic_write_text

SCORES = ["1", "2", "3", "4", "5"]
SIDES = ["A", "B"]


class Judge(Protocol):
    """Picks one of `options` for each conversation; None when its reply names none of them."""

    def choose(self, conversations: Sequence[list[Message]], options: Sequence[str]) -> list[int | None]: ...


@dataclass
class EndpointJudge:
    """A model behind an OpenAI-compatible `/v1/chat/completions` (greedy, a few tokens)."""

    base_url: str
    model: str
    api_key: str = "not-needed"
    timeout: float = 120.0
    max_tokens: int = 8  # room for "Score: 4" or "**A**"; the first allowed option in the reply counts

    def choose(self, conversations: Sequence[list[Message]], options: Sequence[str]) -> list[int | None]:
        try:
            import openai
        except ImportError as error:
            raise RuntimeError(
                "an endpoint judge needs the openai client: pip install 'tunesmith[judge]'"
            ) from error
        client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)
        choices: list[int | None] = []
        for conversation in conversations:
            response = client.chat.completions.create(
                model=self.model,
                messages=[dict(message) for message in conversation],  # type: ignore[misc]
                temperature=0.0,
                max_tokens=self.max_tokens,
            )
            choices.append(parse_choice(response.choices[0].message.content or "", options))
        return choices


@dataclass
class LocalJudge:
    """A local model that picks the option with the highest log-likelihood (never unparseable)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    batch_size: int = 8

    def choose(self, conversations: Sequence[list[Message]], options: Sequence[str]) -> list[int | None]:
        prompts = [render_text(self.tokenizer, c, generation_prompt=True) for c in conversations]
        scores = score_best_labels(
            self.model, self.tokenizer, prompts, list(options), batch_size=self.batch_size
        )
        return [int(index) for index in scores.argmax(dim=1).tolist()]


def parse_choice(reply: str, options: Sequence[str]) -> int | None:
    """Index of the first option that appears in `reply` as a whole word, else None."""
    pattern = re.compile(r"\b(" + "|".join(re.escape(option) for option in options) + r")\b")
    found = pattern.search(reply)
    return list(options).index(found.group(1)) if found else None


def rubric_conversation(
    criterion: str, description: str, question: str, answer: str, reference: str
) -> list[Message]:
    system = (
        "You are a strict evaluator. Rate the answer on one criterion from 1 (very poor) to 5 (excellent). "
        "Reply with the digit only."
    )
    user = (
        f"Criterion: {criterion}: {description}\n\nQuestion:\n{question}\n\nReference answer:\n{reference}\n\n"
        f"Answer to rate:\n{answer}\n\nScore (1-5):"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def pairwise_conversation(question: str, first: str, second: str, reference: str) -> list[Message]:
    system = "You are a strict evaluator. Decide which answer is better. Reply with A or B only."
    user = (
        f"Question:\n{question}\n\nReference answer:\n{reference}\n\nAnswer A:\n{first}\n\nAnswer B:\n{second}\n\n"
        "Which answer is better, A or B?"
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def rubric_scores(
    judge: Judge,
    criteria: dict[str, str],
    questions: Sequence[str],
    answers: Sequence[str],
    references: Sequence[str],
) -> dict[str, list[int | None]]:
    """Each answer's 1-5 score per criterion (None where the judge's reply held no score)."""
    result: dict[str, list[int | None]] = {}
    for criterion, description in criteria.items():
        conversations = [
            rubric_conversation(criterion, description, q, a, r)
            for q, a, r in zip(questions, answers, references, strict=True)
        ]
        result[criterion] = [None if c is None else c + 1 for c in judge.choose(conversations, SCORES)]
    return result


def pairwise_preferences(
    judge: Judge,
    questions: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    references: Sequence[str],
) -> list[float | None]:
    """Per example: 1.0 when the judge prefers A in both orders, 0.0 for B in both, 0.5 when the orders
    disagree (a position-biased or tied judgement); None when either reply was unparseable."""
    rows = list(zip(questions, answers_a, answers_b, references, strict=True))
    a_first = judge.choose([pairwise_conversation(q, a, b, r) for q, a, b, r in rows], SIDES)
    b_first = judge.choose([pairwise_conversation(q, b, a, r) for q, a, b, r in rows], SIDES)
    outcomes: list[float | None] = []
    for first, second in zip(a_first, b_first, strict=True):
        if first is None or second is None:
            outcomes.append(None)
        else:  # first == 0: A shown first was chosen; second == 1: A shown second was chosen
            outcomes.append(((first == 0) + (second == 1)) / 2)
    return outcomes


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either side is constant."""
    rank_x, rank_y = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if len(rank_x) < 2 or rank_x.std() == 0 or rank_y.std() == 0:
        return None
    return float(np.corrcoef(rank_x, rank_y)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # ties share their average rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def summarize_rubric(scores: dict[str, list[int | None]], metric_scores: Sequence[float]) -> dict[str, Any]:
    """Mean score per criterion, unparseable count, and Spearman agreement with a reference metric."""
    summary: dict[str, Any] = {}
    for criterion, values in scores.items():
        pairs = [(v, m) for v, m in zip(values, metric_scores, strict=True) if v is not None]
        summary[criterion] = {
            "mean": float(np.mean([v for v, _ in pairs])) if pairs else None,
            "unparseable": sum(v is None for v in values),
            "spearman_with_metric": spearman([v for v, _ in pairs], [m for _, m in pairs]) if pairs else None,
        }
    return summary


def summarize_pairwise(
    outcomes: Sequence[float | None], metric_a: Sequence[float], metric_b: Sequence[float]
) -> dict[str, Any]:
    """Win rate of A (ties half), unparseable count, and agreement with the metric where it has a winner."""
    valid = [(o, a, b) for o, a, b in zip(outcomes, metric_a, metric_b, strict=True) if o is not None]
    decided = [(o, a, b) for o, a, b in valid if o != 0.5 and a != b]
    return {
        "win_rate": float(np.mean([o for o, _, _ in valid])) if valid else None,
        "position_bias_or_tie": sum(o == 0.5 for o, _, _ in valid),
        "unparseable": sum(o is None for o in outcomes),
        "agreement_with_metric": (
            float(np.mean([(o == 1.0) == (a > b) for o, a, b in decided])) if decided else None
        ),
    }


def judge_evaluation(
    judge: Judge,
    out: Path,
    questions: Sequence[str],
    criteria: dict[str, str],
    *,
    pairwise: bool,
    limit: int | None = None,
) -> dict[str, Any]:
    """Judge the models of the evaluation in `out` and add a `judge` section to its report.json.

    Rubric scores for every model; with `pairwise`, the last model against each earlier one. Agreement
    is measured against the report's first metric, per example.
    """
    report, scored, references, _ = read_scored(out)
    task = EvalTask(report.task)
    metric = report.metric_names[0]
    count = min(len(questions), limit or len(questions))
    refs = [group[0] for group in references[:count]]
    metric_scores = {
        model.name: per_example_scores(task, model, metric, len(report.labels or []))[:count]
        for model in scored
    }
    section: dict[str, Any] = {"metric": metric, "examples": count, "rubric": {}, "pairwise": []}
    for model in scored:
        scores = rubric_scores(judge, criteria, questions[:count], model.predictions[:count], refs)
        section["rubric"][model.name] = summarize_rubric(scores, metric_scores[model.name])
    if pairwise and len(scored) > 1:
        last = scored[-1]
        for other in scored[:-1]:
            outcomes = pairwise_preferences(
                judge, questions[:count], last.predictions[:count], other.predictions[:count], refs
            )
            summary = summarize_pairwise(outcomes, metric_scores[last.name], metric_scores[other.name])
            section["pairwise"].append({"model": last.name, "reference": other.name, **summary})
    report.judge = section
    payload = report.to_json()
    atomic_write_text(out / "report.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(out / "report.md", render_markdown(report) + render_judge_markdown(section))
    return payload


def render_judge_markdown(section: dict[str, Any]) -> str:
    """The judge's rubric means and pairwise win rates as Markdown."""
    lines = [
        "",
        f"## LLM judge ({section['examples']} examples; agreement measured against {section['metric']})",
        "",
    ]
    lines += [
        "| model | criterion | mean (1-5) | unparseable | Spearman with metric |",
        "|---|---|---|---|---|",
    ]
    for name, criteria in section["rubric"].items():
        for criterion, row in criteria.items():
            lines.append(
                f"| {name} | {criterion} | {_fmt(row['mean'])} | {row['unparseable']} | {_fmt(row['spearman_with_metric'])} |"
            )
    if section["pairwise"]:
        lines += [
            "",
            "| model | vs | win rate | split orders | unparseable | agrees with metric |",
            "|---|---|---|---|---|---|",
        ]
        for row in section["pairwise"]:
            lines.append(
                f"| {row['model']} | {row['reference']} | {_fmt(row['win_rate'])} | {row['position_bias_or_tie']} | "
                f"{row['unparseable']} | {_fmt(row['agreement_with_metric'])} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def make_judge(model: str, base_url: str | None, api_key_env: str) -> Judge:
    """An endpoint judge when `base_url` is set, else `model` loaded locally."""
    if base_url is not None:
        return EndpointJudge(base_url, model, os.environ.get(api_key_env) or "not-needed")
    from tunesmith.models.loading import load_model, load_tokenizer, resolve_model

    path = resolve_model(model)
    return LocalJudge(load_model(path).eval(), load_tokenizer(path))
