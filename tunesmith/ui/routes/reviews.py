"""Review tasks: the list, creating one (admins), a task's page (progress per reviewer, close, export) and
its results (win rates, Bradley-Terry strengths, rubric means, agreement, disagreements).

Every action calls `tunesmith.review` (the same store and export as `tunesmith review`); who may do what
is the store's rule (`ForbiddenError` → 403, `NotFoundError` → 404, other `ConfigError` → 400 with its
message). The review screen itself is `routes/judging.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tunesmith.config import DEFAULT_MODEL, ConfigError, format_validation_error, tunesmith_home
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import NotFoundError
from tunesmith.review.export import export_review
from tunesmith.review.records import ReviewKind
from tunesmith.review.rubric import RubricSpec
from tunesmith.review.sources import collect_items
from tunesmith.review.store import ForbiddenError, ReviewStore
from tunesmith.ui import queries
from tunesmith.ui.web import AdminDep, CallerDep, ConsoleState, CsrfDep, StateDep, UiError, page_url, render

router = APIRouter()
DEFAULT_RUBRIC = (
    "criteria:\n  brand_voice: Does it sound like us (warm, plain, no jargon)?\n  accuracy: Is it correct?\n"
)


@contextmanager
def review_errors() -> Iterator[None]:
    """The review store's refusals as pages: 403, 404, or 400 with the store's message."""
    try:
        yield
    except ForbiddenError as error:
        raise UiError(403, str(error)) from None
    except NotFoundError as error:
        raise UiError(404, str(error)) from None


def reviews(state: ConsoleState) -> ReviewStore:
    return ReviewStore(state.registry)


@router.get("/reviews")
def task_list(request: Request, state: StateDep, caller: CallerDep) -> HTMLResponse:
    store = reviews(state)
    tasks = store.list_tasks(caller)
    progress = {task.id: store.progress(task.id, caller) for task in tasks}
    return render(request, "reviews.html", tasks=tasks, progress=progress)


def _sources(state: ConsoleState, caller: Caller) -> dict[str, Any]:
    """What a new task can be made from: evaluations, deployments and prepared datasets the admin sees."""
    return {
        "evaluations": [
            e for e in queries.list_evaluations(state.registry, caller) if e["kind"] == "evaluation"
        ],
        "deployments": state.store.list_deployments(caller),
        "datasets": [d for d in queries.list_datasets(state.registry, caller) if d["lineage"]],
    }


@router.get("/reviews/new")
def new_task(request: Request, state: StateDep, admin: AdminDep) -> HTMLResponse:
    assert admin.caller is not None
    return render(request, "review_new.html", kinds=list(ReviewKind), rubric=DEFAULT_RUBRIC, error=None,
                  form={}, **_sources(state, admin.caller))  # fmt: skip


def parse_rubric(text: str) -> RubricSpec:
    """A rubric from the form: YAML with `criteria:` (and optionally `levels:`), or just the criteria."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"rubric: not YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError("rubric: expected `criteria:` with one `name: question` line per criterion")
    try:
        return RubricSpec.model_validate(raw if "criteria" in raw else {"criteria": raw})
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source="rubric")) from None


@router.post("/reviews", dependencies=[CsrfDep])
async def create_task(
    request: Request, state: StateDep, admin: AdminDep, name: Annotated[str, Form()], kind: Annotated[str, Form()],
    source: Annotated[str, Form()], models: Annotated[str, Form()] = "", examples: Annotated[str, Form()] = "",
    sample: Annotated[str, Form()] = "", seed: Annotated[int, Form()] = 0, reviewers: Annotated[int, Form()] = 2,
    tenant: Annotated[str, Form()] = "", rubric: Annotated[str, Form()] = "",
) -> Response:  # fmt: skip
    """Create a task from `source` (`evaluation:<id>`, `deployment:<name>` or `dataset:<hash>`)."""
    caller = admin.caller
    assert caller is not None
    form = {"name": name, "kind": kind, "source": source, "models": models, "examples": examples,
            "sample": sample, "seed": seed, "reviewers": reviewers, "tenant": tenant}  # fmt: skip
    with review_errors():
        try:
            task_id = await run_in_threadpool(_create, state, caller, form, rubric)
        except (ForbiddenError, NotFoundError):
            raise
        except ConfigError as error:  # a bad field: the form again, filled in, with the reason
            return render(request, "review_new.html", status=400, kinds=list(ReviewKind), rubric=rubric,
                          error=str(error), form=form, **_sources(state, caller))  # fmt: skip
    return RedirectResponse(page_url(request, f"/reviews/{task_id}"), status_code=303)


def _number(text: str, field: str) -> int | None:
    if not text.strip():
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"{field}: a whole number of at least 1, got {text!r}")
    return int(text)


def _create(state: ConsoleState, caller: Caller, form: dict[str, Any], rubric_text: str) -> int:
    if form["kind"] not in list(ReviewKind):
        raise ConfigError(f"kind {form['kind']!r}: one of {', '.join(ReviewKind)}")
    kind = ReviewKind(form["kind"])
    origin, _, value = str(form["source"]).partition(":")
    where: dict[str, Any] = {}
    if origin == "evaluation" and value.isdigit():
        evaluation = queries.find_evaluation(state.registry, caller, int(value))
        if evaluation is None:
            raise NotFoundError(f"no evaluation {value}")
        where["evaluation"] = Path(evaluation["out_dir"])
    elif origin == "deployment" and value:
        where["deployment"] = value
    elif origin == "dataset" and value:
        dataset = queries.find_dataset(state.registry, caller, value)
        if dataset is None:
            raise NotFoundError(f"no dataset {value}")
        where["dataset"] = Path(dataset["path"])
    else:
        raise ConfigError("source: pick an evaluation, a deployment or a dataset")
    models = [m.strip() for m in str(form["models"]).split(",") if m.strip()] or None
    items, source = collect_items(
        state.store, caller, kind, models=models, examples=_number(form["examples"], "examples"),
        sample=_number(form["sample"], "sample"), seed=int(form["seed"]), **where,
    )  # fmt: skip
    spec = parse_rubric(rubric_text) if kind is ReviewKind.rubric else None
    task = reviews(state).create(
        caller, str(form["name"]), kind, items, source=source, rubric=spec,
        reviewers_per_item=int(form["reviewers"]), tenant=form["tenant"].strip() or source.get("tenant"),
    )  # fmt: skip
    return task.id


@router.get("/reviews/{task_id}")
def task_page(request: Request, state: StateDep, caller: CallerDep, task_id: int) -> HTMLResponse:
    store = reviews(state)
    with review_errors():
        task = store.get(task_id, caller)
        progress = store.progress(task_id, caller)
    out = tunesmith_home() / "datasets" / f"review-{task_id}"
    return render(request, "review_task.html", task=task, progress=progress, export_out=str(out),
                  default_model=DEFAULT_MODEL, exported=None, unused=[], error=None)  # fmt: skip


@router.get("/reviews/{task_id}/results")
def results_page(request: Request, state: StateDep, caller: CallerDep, task_id: int) -> HTMLResponse:
    store = reviews(state)
    with review_errors():
        results = store.results(task_id, caller)
        names = {r.reviewer: r.name or r.reviewer for r in store.progress(task_id, caller).reviewers}
    return render(request, "review_results.html", results=results, task=results.task, names=names)


@router.post("/reviews/{task_id}/close", dependencies=[CsrfDep])
async def close_task(request: Request, state: StateDep, admin: AdminDep, task_id: int) -> Response:
    assert admin.caller is not None
    with review_errors():
        await run_in_threadpool(reviews(state).close, task_id, admin.caller)
    return RedirectResponse(page_url(request, f"/reviews/{task_id}"), status_code=303)


@router.post("/reviews/{task_id}/export", dependencies=[CsrfDep])
async def export_task(
    request: Request, state: StateDep, admin: AdminDep, task_id: int, out: Annotated[str, Form()],
    model: Annotated[str, Form()],
) -> HTMLResponse:  # fmt: skip
    """Turn the task's judgements into datasets (DPO pairs, KTO rows, corrected SFT rows), as `review export`."""
    store = reviews(state)
    caller = admin.caller
    assert caller is not None
    with review_errors():
        task = store.get(task_id, caller)
        progress = store.progress(task_id, caller)
        try:
            exported, unused = await run_in_threadpool(
                lambda: export_review(store, task_id, caller, Path(out).expanduser(), model=model.strip())
            )
            error = None
        except (ForbiddenError, NotFoundError):
            raise
        except (ConfigError, OSError) as refused:
            exported, unused, error = None, [], str(refused)
    return render(request, "review_task.html", status=400 if error else 200, task=task, progress=progress,
                  export_out=out, default_model=model, error=error, unused=unused,
                  exported={kind: {"hash": r.hash, "out": str(r.out), "splits": r.splits} for kind, r in (exported or {}).items()})  # fmt: skip
