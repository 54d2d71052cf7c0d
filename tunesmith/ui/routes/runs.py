"""Runs: the list (filter, sort, page), a run's page (curves, validation, config, plan, events, lineage)
and the comparison of 2-10 runs (curves overlaid, config diff, metric table)."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from tunesmith.registry.serving_records import Caller
from tunesmith.ui import queries
from tunesmith.ui.charts import Series, line_chart
from tunesmith.ui.runfiles import config_diff, curve, read_metric_lines, read_plan, validation_table
from tunesmith.ui.web import CallerDep, StateDep, UiError, render

router = APIRouter()
PER_PAGE = 50
MAX_COMPARED = 10
_METRIC_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@router.get("/runs")
def run_list(
    request: Request,
    state: StateDep,
    caller: CallerDep,
    status: str | None = None,
    model: str | None = None,
    q: str | None = None,
    sort: str = "created",
    order: str = "desc",
    page: Annotated[int, Query(ge=1)] = 1,
) -> HTMLResponse:
    if sort not in queries.RUN_COLUMNS and not _METRIC_NAME.match(sort):
        raise UiError(
            400, f"sort={sort}: sort by a column ({', '.join(queries.RUN_COLUMNS)}) or a metric name"
        )
    if order not in ("asc", "desc"):
        raise UiError(400, f"order={order}: asc or desc")
    wanted = queries.RunFilter(status=status or None, model=model or None, text=(q or "").strip() or None,
                               sort=sort, descending=order == "desc", page=page, per_page=PER_PAGE)  # fmt: skip
    runs, total = queries.list_runs(state.registry, caller, wanted)
    statuses, models = queries.run_choices(state.registry, caller)
    return render(
        request, "runs.html", runs=runs, total=total, page=page, pages=max(1, math.ceil(total / PER_PAGE)),
        statuses=statuses, models=models, wanted=wanted, metric_columns=queries.KEY_METRICS,
        columns=list(queries.RUN_COLUMNS), max_compared=MAX_COMPARED,
    )  # fmt: skip


def _visible_run(state: Any, caller: Caller, run_id: str) -> dict[str, Any]:
    run = queries.find_run(state.registry, caller, run_id)
    if run is None:
        raise UiError(404, f"no run {run_id}")
    return run


@router.get("/runs/compare")
def compare(
    request: Request, state: StateDep, caller: CallerDep, run: Annotated[list[str] | None, Query()] = None
) -> HTMLResponse:
    ids = list(dict.fromkeys(run or []))  # the order given, each once
    if not 2 <= len(ids) <= MAX_COMPARED:
        raise UiError(400, f"pick 2 to {MAX_COMPARED} runs to compare (got {len(ids)})")
    runs = [_visible_run(state, caller, run_id) for run_id in ids]
    lines = [read_metric_lines(r["run_dir"], r["id"]) for r in runs]
    charts = [
        line_chart(
            [Series(r["id"], curve(one, name)) for r, one in zip(runs, lines, strict=True)],
            title=title,
            x_label="optimizer step",
            y_label=name,
        )  # fmt: skip
        for name, title in (
            ("train_loss", "train loss"),
            ("val_loss", "validation loss"),
            ("lr", "learning rate"),
        )
    ]
    # the registry's final metrics, with each run's last validation scores from its metrics.jsonl
    finals = [
        {**(r["metrics"] or {}), **(validation_table(one)[1] or [{}])[-1]}
        for r, one in zip(runs, lines, strict=True)
    ]
    metric_names = sorted({key for final in finals for key in final if key not in ("step", "epoch")})
    diff = config_diff([r["config"] for r in runs])
    return render(request, "compare.html", runs=runs, charts=charts, metric_names=metric_names, diff=diff,
                  finals=finals)  # fmt: skip


@router.get("/runs/{run_id}")
def run_page(request: Request, state: StateDep, caller: CallerDep, run_id: str) -> HTMLResponse:
    run = _visible_run(state, caller, run_id)
    lines = read_metric_lines(run["run_dir"], run["id"])
    loss = line_chart(
        [Series("train loss", curve(lines, "train_loss")), Series("validation loss", curve(lines, "val_loss"))],
        title="loss", x_label="optimizer step", y_label="cross-entropy",
    )  # fmt: skip
    rate = line_chart([Series("learning rate", curve(lines, "lr"))], title="learning rate",
                      x_label="optimizer step", y_label="lr")  # fmt: skip
    val_names, val_rows = validation_table(lines)
    adapters = {f"{a['name']}@{a['version']}" for a in run["adapters"]}
    deployments = [
        d for d in state.store.list_deployments(caller) if any(v["model"] in adapters for v in d["variants"])
    ]
    plan = read_plan(run["run_dir"])
    return render(
        request, "run.html", run=run, loss_chart=loss, lr_chart=rate, val_names=val_names, val_rows=val_rows,
        config=yaml.safe_dump(run["config"], sort_keys=False), plan=json.dumps(plan, indent=2) if plan else None,
        deployments=deployments,
        evaluations=queries.list_evaluations(state.registry, caller, run_id=run["id"]),
    )  # fmt: skip
