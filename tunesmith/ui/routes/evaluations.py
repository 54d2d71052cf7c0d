"""Evaluations: the list, and one evaluation's page (metrics with intervals for every model and baseline,
paired comparisons with verdicts, per-class tables, the examples side by side, worst or best first)."""

from __future__ import annotations

import json
import math
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from tunesmith.eval.records import format_interval, format_number
from tunesmith.ui import queries
from tunesmith.ui.examples import ORDERS, load_examples
from tunesmith.ui.web import CallerDep, StateDep, UiError, render

router = APIRouter()
EXAMPLES_PER_PAGE = 20


@router.get("/evaluations")
def evaluation_list(request: Request, state: StateDep, caller: CallerDep) -> HTMLResponse:
    return render(request, "evaluations.html", evaluations=queries.list_evaluations(state.registry, caller))


@router.get("/evaluations/{evaluation_id}")
def evaluation_page(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    evaluation_id: int,
    metric: str | None = None,
    order: str = "worst",
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    evaluation = queries.find_evaluation(state.registry, caller, evaluation_id)
    if evaluation is None:
        raise UiError(404, f"no evaluation {evaluation_id}")
    report = evaluation["report"]
    if report.get("kind", "evaluation") != "evaluation":  # a bias audit or a gate verdict: its record as is
        return render(request, "record.html", evaluation=evaluation, body=json.dumps(report, indent=2))
    names = list(report["models"][0]["metrics"]) if report["models"] else []
    metric = metric or (names[0] if names else None)
    if metric is not None and metric not in names:
        raise UiError(400, f"metric={metric}: this evaluation has {', '.join(names)}")
    if order not in ORDERS:
        raise UiError(400, f"order={order}: one of {', '.join(ORDERS)}")
    table = load_examples(evaluation["out_dir"], report, metric) if metric else None
    examples = table.ordered(order) if table else []
    pages = max(1, math.ceil(len(examples) / EXAMPLES_PER_PAGE))
    shown = examples[(page - 1) * EXAMPLES_PER_PAGE : page * EXAMPLES_PER_PAGE]
    return render(
        request, "evaluation.html", evaluation=evaluation, report=report, names=names, metric=metric,
        order=order, orders=ORDERS, table=table, examples=shown, page=page, pages=pages,
        total=len(examples), interval=format_interval, number=format_number,
    )  # fmt: skip
