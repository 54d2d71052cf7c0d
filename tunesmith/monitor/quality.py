"""The sampled LLM-judge score of a window of served answers, and the alert when it falls.

Owns: drawing a seeded random sample of a window's logged answers, scoring it against a rubric with
the evaluation's judge (`eval.judge.rubric_scores`), the mean score with its bootstrap interval, and the
one-sided permutation test of a fall from the previous window. Does not own: the judge itself, its
prompts, or reading traffic (see `check`).

Production answers have no reference answer, so the judge is told there is none and rates each answer
on the criterion alone. Each pass judges a sample of the previous window again rather than reusing an
earlier pass's score: both sides of the comparison then come from the same judge and rubric, so
changing either cannot raise an alert; the price is twice `sample` judge calls per pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.eval.judge import Judge, rubric_scores
from tunesmith.eval.stats import bootstrap_interval, resample_indices

__all__ = ["JUDGE_ALARM", "NO_REFERENCE", "SampledJudge", "compare_judge_scores", "judge_sample"]

JUDGE_ALARM = 0.01  # one-sided p-value below which a fall of the judge score alerts (as RATE_ALARM)
NO_REFERENCE = "(none: a production answer; rate it on the criterion alone)"
_PERMUTATIONS = 999


@dataclass(frozen=True)
class SampledJudge:
    """A judge, the rubric it scores against (criterion -> what a 5 means), and how many answers of
    each window it scores."""

    judge: Judge
    criteria: dict[str, str]
    sample: int
    seed: int = 0


def judge_sample(sampled: SampledJudge, questions: Sequence[str], answers: Sequence[str]) -> dict[str, Any]:
    """Score a seeded random sample of (question, first answer) pairs: each answer's score is its mean
    over the criteria it got a score for; an answer with none is counted as unparseable."""
    rng = np.random.default_rng(sampled.seed)
    chosen = sorted(rng.choice(len(answers), min(sampled.sample, len(answers)), replace=False).tolist())
    scores = rubric_scores(
        sampled.judge,
        sampled.criteria,
        [questions[i] for i in chosen],
        [answers[i] for i in chosen],
        [NO_REFERENCE] * len(chosen),
    )
    per_answer = [[column[row] for column in scores.values()] for row in range(len(chosen))]
    means = [
        float(np.mean([s for s in row if s is not None]))
        for row in per_answer
        if any(s is not None for s in row)
    ]
    report: dict[str, Any] = {
        "sampled": len(chosen),
        "of": len(answers),
        "unparseable": len(chosen) - len(means),
        "criteria": {
            criterion: _mean([s for s in column if s is not None]) for criterion, column in scores.items()
        },
        "scores": means,
        "mean": None,
    }
    if means:
        interval = bootstrap_interval(
            np.asarray(means), np.mean, resample_indices(len(means), seed=sampled.seed)
        )
        report.update(mean=interval.value, ci_low=interval.ci_low, ci_high=interval.ci_high)
    return report


def _mean(values: list[int]) -> float | None:
    return float(np.mean(values)) if values else None


def compare_judge_scores(
    current: dict[str, Any], previous: dict[str, Any], seed: int = 0
) -> list[dict[str, Any]]:
    """An alert when the current window's scores are significantly below the previous window's:
    one-sided permutation test of the difference in means (exact at any sample size), p < JUDGE_ALARM."""
    now, before = np.asarray(current["scores"]), np.asarray(previous["scores"])
    if len(now) < 2 or len(before) < 2:
        return []
    pooled = np.concatenate([now, before])
    observed = now.mean() - before.mean()
    rng = np.random.default_rng(seed)
    as_low = 0
    for _ in range(_PERMUTATIONS):
        shuffled = rng.permutation(pooled)
        as_low += shuffled[: len(now)].mean() - shuffled[len(now) :].mean() <= observed + 1e-12
    p_value = (as_low + 1) / (_PERMUTATIONS + 1)
    if p_value >= JUDGE_ALARM:
        return []
    return [{
        "kind": "judge_score",
        "message": f"judge score fell from {before.mean():.2f} [{previous['ci_low']:.2f}, {previous['ci_high']:.2f}] "
        f"to {now.mean():.2f} [{current['ci_low']:.2f}, {current['ci_high']:.2f}] (p={p_value:.2g})",
        "data": {"previous": _summary(previous), "current": _summary(current), "p_value": p_value},
    }]  # fmt: skip


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    return {key: report[key] for key in ("mean", "ci_low", "ci_high", "sampled", "of")}
