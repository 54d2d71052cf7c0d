"""The review queue in a real browser: two reviewers each judge 10 blind pairwise items and score 5 items
on a rubric with the keyboard only; the results page's win rates, rubric means and agreement match the
same figures computed here from what each reviewer meant to choose."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Any

import pytest

from tests.browser.conftest import Console, screenshot
from tests.ui_registry import Reviews, fill_reviews

ACME, BASE = "acme-adapter@1", "base"
# What each reviewer prefers on pairwise item i (a model, "tie" or "both_bad"), and scores rubric item i.
PLAN = {
    "alice": {"pairwise": [ACME] * 7 + [BASE, "tie", "both_bad"], "rubric": [(5, 4), (2, 3), (4, 4), (1, 2), (5, 5)]},
    "bob": {"pairwise": [ACME] * 6 + [BASE, BASE, "tie", BASE], "rubric": [(4, 4), (2, 2), (5, 4), (2, 2), (5, 5)]},
}  # fmt: skip
KEYS = {"tie": "t", "both_bad": "x"}


@pytest.fixture(scope="module")
def tasks(console: Console) -> Reviews:
    return fill_reviews(console.filled)


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen (1960), written out here independently of `tunesmith.review.stats`."""
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    count_a, count_b = Counter(first), Counter(second)
    expected = sum(count_a[c] * count_b[c] for c in set(first) | set(second)) / n**2
    return (observed - expected) / (1 - expected)


def judge_pairwise(page: Any, console: Console, task: int, plan: list[str]) -> None:
    page.goto(f"{console.url}/reviews/{task}/next")
    for _ in range(len(plan)):
        index = int(re.search(r"tagline (\d+)", page.inner_text("#prompt")).group(1))  # type: ignore[union-attr]
        wanted = plan[index]
        shown_a = page.inner_text("#output-a pre")
        key = KEYS.get(wanted) or ("a" if shown_a.startswith(wanted) else "b")
        revealed = page.locator("#revealed")
        earlier = revealed.inner_text().count(ACME) if revealed.count() else 0
        assert page.content().count(ACME) == 1 + earlier  # only in its output's text: the screen is blind
        page.keyboard.press(key)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        revealed = page.inner_text("#revealed")
        assert ACME in revealed and BASE in revealed  # identities shown once the vote is in
    assert page.locator("#all-done").count() == 1


def judge_rubric(
    page: Any, console: Console, task: int, plan: list[tuple[int, int]], edit: str | None
) -> None:
    page.goto(f"{console.url}/reviews/{task}/next")
    for _ in range(len(plan)):
        index = int(re.search(r"rate answer (\d+)", page.inner_text("#prompt")).group(1))  # type: ignore[union-attr]
        if edit is not None and index == 2:
            page.fill("#edited", edit)
            page.evaluate("document.activeElement.blur()")
        for score in plan[index]:
            page.keyboard.press(str(score))
        with page.expect_navigation():
            page.keyboard.press("Enter")
    assert page.locator("#all-done").count() == 1


def test_two_reviewers_judge_with_the_keyboard_and_the_results_match(
    browser: Any, console: Console, tasks: Reviews
) -> None:
    for name in ("alice", "bob"):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(10_000)
        page = context.new_page()
        page.goto(f"{console.url}/login")
        page.fill("#key", tasks.keys[name])
        page.click("#sign-in")
        page.wait_for_url(f"{console.url}/runs")
        if name == "alice":
            page.goto(f"{console.url}/reviews/{tasks.pairwise}/next")
            screenshot(page, "review-pairwise")
        judge_pairwise(page, console, tasks.pairwise, PLAN[name]["pairwise"])  # type: ignore[arg-type]
        if name == "alice":
            page.goto(f"{console.url}/reviews/{tasks.rubric}/next")
            screenshot(page, "review-rubric")
        judge_rubric(
            page, console, tasks.rubric, PLAN[name]["rubric"], "a better answer" if name == "alice" else None
        )  # type: ignore[arg-type]
        context.close()

    # computed here from the plan: each model's points over its comparisons (ties and both bad half)
    points: Counter[str] = Counter()
    for name in PLAN:
        for preferred in PLAN[name]["pairwise"]:
            if preferred in (ACME, BASE):
                points[preferred] += 1
            else:
                points[ACME] += 0.5
                points[BASE] += 0.5
    comparisons = 2 * len(PLAN["alice"]["pairwise"])
    pairwise_kappa = cohen_kappa(PLAN["alice"]["pairwise"], PLAN["bob"]["pairwise"])
    rubric_models = [ACME if index % 2 == 0 else BASE for index in range(5)]
    means = {
        (model, criterion): sum(
            PLAN[n]["rubric"][i][c] for n in PLAN for i in range(5) if rubric_models[i] == model
        )  # type: ignore[index]
        / (2 * rubric_models.count(model))
        for model in (ACME, BASE)
        for c, criterion in enumerate(("voice", "accuracy"))
    }
    voice_kappa = cohen_kappa(*[[scores[0] for scores in PLAN[n]["rubric"]] for n in PLAN])  # type: ignore[index]

    admin = browser.new_context()
    page = admin.new_page()
    page.goto(f"{console.url}/login")
    page.fill("#key", console.filled.keys["admin"])
    page.click("#sign-in")
    page.goto(f"{console.url}/reviews/{tasks.pairwise}/results")
    screenshot(page, "review-results")
    for model in (ACME, BASE):
        shown = page.inner_text(f"#win-rates tr[data-model='{model}'] .win-rate")
        assert shown.startswith(f"{points[model] / comparisons:.3f} ["), (model, shown)
    assert page.inner_text("#agreement tr[data-target='choice'] .cohen") == f"{pairwise_kappa:.3f}"
    page.goto(f"{console.url}/reviews/{tasks.rubric}/results")
    assert page.inner_text("#agreement tr[data-target='voice'] .cohen") == f"{voice_kappa:.3f}"
    rows = {
        row.split("\t")[0]: row.split("\t")[1:]
        for row in page.locator("#rubric-means tbody tr").all_inner_texts()
    }
    for (model, criterion), mean in means.items():
        assert rows[model][("voice", "accuracy").index(criterion)].startswith(f"{mean:.3f} [")
    page.goto(f"{console.url}/reviews/{tasks.pairwise}")
    rows_shown = [row.split("\t")[:2] for row in page.locator("#reviewers tbody tr").all_inner_texts()]
    assert rows_shown == [["alice", "10"], ["bob", "10"]]  # progress per reviewer
    admin.close()
    edits = [j.edited_text for j in tasks.store.judgements(tasks.rubric, tasks.admin) if j.edited_text]
    assert edits == ["a better answer"]
