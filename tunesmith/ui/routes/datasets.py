"""Datasets: versions by folder, and one version's page (prepare report: rows removed per step, splits,
inputs; lineage: the runs trained on it and the evaluations made on it)."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tunesmith.data.ingest import MANIFEST
from tunesmith.ui import queries
from tunesmith.ui.web import CallerDep, StateDep, UiError, render

router = APIRouter()


@router.get("/datasets")
def dataset_list(request: Request, state: StateDep, caller: CallerDep) -> HTMLResponse:
    datasets = queries.list_datasets(state.registry, caller)
    folders = [(path, list(versions)) for path, versions in groupby(datasets, key=lambda d: d["path"])]
    return render(request, "datasets.html", folders=folders)


def _read_json(folder: str, name: str) -> dict[str, Any] | None:
    """A JSON file of the dataset folder (its manifest, its prepare report), if the folder is still there."""
    try:
        found: dict[str, Any] = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found


@router.get("/datasets/{digest}")
def dataset_page(request: Request, state: StateDep, caller: CallerDep, digest: str) -> HTMLResponse:
    dataset = queries.find_dataset(state.registry, caller, digest)
    if dataset is None:
        raise UiError(404, f"no dataset {digest}")
    lineage = dataset["lineage"] or {}
    manifest = _read_json(dataset["path"], MANIFEST)
    if manifest is not None and manifest.get("hash") != dataset["id"]:
        manifest = None  # the folder now holds another version (prepared again in place)
    report = (_read_json(dataset["path"], "report.json") or {}) if manifest else {}
    reasons = {step["name"]: step.get("removed_by_reason", {}) for step in report.get("steps", [])}
    steps = [
        {**step, "removed": step["rows_in"] - step["rows_out"], "reasons": reasons.get(step["name"], {})}
        for step in lineage.get("steps", [])
    ]
    return render(request, "dataset.html", dataset=dataset, lineage=lineage, steps=steps,
                  manifest=manifest)  # fmt: skip
