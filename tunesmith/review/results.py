"""A review task's results from its judgements: what `review results` prints and the console shows.

Owns: turning stored judgements (identities already resolved) into the inputs of `stats` and
assembling `ReviewResults`: win rates and Bradley-Terry strengths (pairwise kinds), the model-vs-human
share, rubric means per model and criterion, data decisions, agreement per target and the list of
disagreements. Does not own: the formulas (see `stats`) or reading the registry (see `store`). No torch.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Any

import numpy as np

from tunesmith.review.records import (
    HUMAN,
    Agreement,
    Choice,
    Disagreement,
    Judgement,
    ReviewKind,
    ReviewResults,
    ReviewTask,
)
from tunesmith.review.stats import (
    Comparison,
    Level,
    bradley_terry_strengths,
    cohen_kappa,
    fleiss_kappa,
    krippendorff_alpha,
    mean_interval,
    win_rates,
)

SCORE_LEVELS: tuple[Level, ...] = ("nominal", "ordinal", "interval")  # a 1-5 score read each way
SCORE_DISAGREEMENT = 2  # rubric scores this far apart on one item are listed as a disagreement

Table = dict[int, dict[str, Hashable]]  # item id -> reviewer -> value


def compute_results(
    task: ReviewTask, items: list[dict[str, Any]], judgements: list[Judgement], samples: int, seed: int
) -> ReviewResults:
    """Everything the task's judgements say, intervals over items (`samples` bootstrap resamples)."""
    prompts = {item["id"]: _last_user_turn(item["prompt"]) for item in items}
    results = ReviewResults(task=task, judgements=len(judgements))
    if not judgements:
        return results
    if task.kind in (ReviewKind.pairwise, ReviewKind.model_vs_human):
        comparisons = [_comparison(j) for j in judgements]
        item_ids = [j.item_id for j in judgements]
        results.win_rates.update(win_rates(comparisons, item_ids, samples, seed))
        results.strengths.update(bradley_terry_strengths(comparisons, item_ids, samples, seed))
        table: Table = {}
        for j in judgements:
            table.setdefault(j.item_id, {})[j.reviewer] = str(j.preferred)
        _agree(results, "choice", table, ("nominal",), task.reviewers_per_item, prompts)
        if task.kind is ReviewKind.model_vs_human:
            model_or_tie = [0.0 if j.preferred == HUMAN else 1.0 for j in judgements]
            results.model_vs_human = mean_interval(model_or_tie, item_ids, samples, seed)
    elif task.kind is ReviewKind.rubric:
        _rubric(results, task, items, judgements, samples, seed, prompts)
    else:
        _decisions(results, task, judgements, prompts)
    return results


def _comparison(judgement: Judgement) -> Comparison:
    """(first model, second model, first's score) in sorted model order, ties and both-bad half."""
    first, second = sorted(judgement.shown)
    score = 1.0 if judgement.preferred == first else 0.0 if judgement.preferred == second else 0.5
    return first, second, score


def _rubric(
    results: ReviewResults,
    task: ReviewTask,
    items: list[dict[str, Any]],
    judgements: list[Judgement],
    samples: int,
    seed: int,
    prompts: dict[int, str],
) -> None:
    model_of = {item["id"]: item["outputs"][0]["model"] for item in items}
    assert task.rubric is not None
    for criterion in task.rubric["criteria"]:
        by_model: dict[str, tuple[list[float], list[int]]] = {}
        table: Table = {}
        for j in judgements:
            assert j.scores is not None
            values, item_ids = by_model.setdefault(model_of[j.item_id], ([], []))
            values.append(j.scores[criterion])
            item_ids.append(j.item_id)
            table.setdefault(j.item_id, {})[j.reviewer] = j.scores[criterion]
        for model, (values, item_ids) in sorted(by_model.items()):
            results.rubric_means.setdefault(model, {})[criterion] = mean_interval(
                values, item_ids, samples, seed
            )
        _agree(results, criterion, table, SCORE_LEVELS, task.reviewers_per_item, prompts)


def _decisions(
    results: ReviewResults, task: ReviewTask, judgements: list[Judgement], prompts: dict[int, str]
) -> None:
    table: Table = {}
    for j in judgements:
        decision = (
            "edited"
            if j.edited_text is not None
            else "approved"
            if j.choice is Choice.approve
            else "rejected"
        )
        results.decisions[decision] = results.decisions.get(decision, 0) + 1
        table.setdefault(j.item_id, {})[j.reviewer] = str(j.choice)
    _agree(results, "decision", table, ("nominal",), task.reviewers_per_item, prompts)


def _agree(
    results: ReviewResults,
    target: str,
    table: Table,
    levels: tuple[Level, ...],
    per_item: int,
    prompts: dict[int, str],
) -> None:
    """Add the agreement on `target` and its disagreements to `results`."""
    results.agreement.append(agreement(target, table, levels, per_item))
    for item_id, values in sorted(table.items()):
        if _disagree(list(values.values()), levels):
            results.disagreements.append(Disagreement(item_id, target, dict(values), prompts[item_id]))  # type: ignore[arg-type]


def agreement(target: str, table: Table, levels: tuple[Level, ...], per_item: int) -> Agreement:
    """Cohen's kappa (two reviewers), Fleiss' kappa (items with `per_item` reviewers) and Krippendorff's
    alpha at each of `levels` on `table`; None where a statistic does not apply or is undefined."""
    reviewers = sorted({reviewer for values in table.values() for reviewer in values})
    shared = {item: values for item, values in table.items() if len(values) >= 2}
    categories = sorted({value for values in table.values() for value in values.values()}, key=str)
    cohen = None
    if len(reviewers) == 2 and shared:
        first, second = reviewers
        cohen = _defined(
            cohen_kappa([v[first] for v in shared.values()], [v[second] for v in shared.values()])
        )
    fleiss = None
    full = [values for values in shared.values() if len(values) == per_item]
    if per_item >= 2 and full:
        counts = np.array([[list(values.values()).count(c) for c in categories] for values in full])
        fleiss = _defined(fleiss_kappa(counts))
    alpha: dict[str, float | None] = {level: None for level in levels}
    if shared:
        code = {category: index for index, category in enumerate(categories)}  # nominal: any numbers do
        for level in levels:
            matrix = np.full((len(reviewers), len(shared)), np.nan)
            for column, values in enumerate(shared.values()):
                for row, reviewer in enumerate(reviewers):
                    if reviewer in values:
                        value = values[reviewer]
                        matrix[row, column] = code[value] if level == "nominal" else float(value)  # type: ignore[arg-type]
            alpha[level] = _defined(krippendorff_alpha(matrix, level))
    return Agreement(target, len(shared), len(reviewers), cohen, fleiss, alpha)


def _disagree(values: list[Hashable], levels: tuple[Level, ...]) -> bool:
    if len(values) < 2:
        return False
    if levels == ("nominal",):
        return len(set(values)) > 1
    scores = [float(value) for value in values]  # type: ignore[arg-type]
    return max(scores) - min(scores) >= SCORE_DISAGREEMENT


def _defined(value: float) -> float | None:
    return None if math.isnan(value) else value


def _last_user_turn(prompt: list[dict[str, str]]) -> str:
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")
