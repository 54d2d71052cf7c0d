"""What the console reads from the registry, with who may see it. No torch.

Ownership: runs, evaluations and datasets carry no tenant column; a run belongs to the tenants that own
the adapter names it produced (`adapter_owners`), an evaluation to its run's, a dataset to the runs
trained on it and the evaluations made on it. A tenant sees those; an admin sees everything; what
belongs to no tenant (a run with no registered adapter) is an admin's only (`Caller.can_see(None)`).
Deployments carry their tenant and are read through `ServingStore`.

The run list is one query (filter, sort, count and page in SQL; key metrics from the `runs.metrics`
column), so a list of thousands of runs reads no run folder. Owns: these read queries. Does not own:
the tables, or any change (those go through the stores, which write the audit trail).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, func, or_, select

from tunesmith.registry.models import AdapterRecord, DatasetRecord, EvaluationRecord, RunRecord
from tunesmith.registry.serving import AdapterOwnerRecord, ApiKeyRecord
from tunesmith.registry.serving_records import Caller, Role
from tunesmith.registry.store import Registry

RUN_COLUMNS: dict[str, Any] = {
    "created": RunRecord.created_at,
    "id": RunRecord.id,
    "status": RunRecord.status,
    "method": RunRecord.method,
    "model": RunRecord.base_model,
    "dataset": DatasetRecord.path,
    "tokens": RunRecord.trained_tokens,
}
KEY_METRICS = ("train_loss", "val_loss", "tokens_per_second")  # the run list's metric columns


@dataclass(frozen=True)
class RunFilter:
    """The run list's filter, sort and page, as the query string gives them (checked by the route)."""

    status: str | None = None
    model: str | None = None
    text: str | None = None
    sort: str = "created"  # a RUN_COLUMNS key, or a metric name (a key of `runs.metrics`)
    descending: bool = True
    page: int = 1
    per_page: int = 50


def caller_for_key(registry: Registry, key_id: int) -> Caller | None:
    """The caller of API key `key_id`, or None if it is missing or revoked (sessions are checked per request)."""
    with registry.session() as session:
        record = session.get(ApiKeyRecord, key_id)
        if record is None or record.revoked:
            return None
        # as `ServingStore.authenticate` makes it (by hash); change both together
        role = Role(record.role) if record.role else (Role.admin if record.is_admin else Role.viewer)
        return Caller(record.tenant, record.is_admin, record.id, name=record.name, role=role)


def _tenant_runs(tenant: str | None) -> Select[Any]:
    """The ids of runs whose adapters `tenant` owns."""
    return (
        select(AdapterRecord.run_id)
        .join(AdapterOwnerRecord, AdapterOwnerRecord.name == AdapterRecord.name)
        .where(AdapterOwnerRecord.tenant == tenant, AdapterRecord.run_id.is_not(None))
    )


def _visible_runs(caller: Caller) -> ColumnElement[bool] | None:
    """A condition on RunRecord for runs the caller may see; None: no condition (an admin)."""
    return None if caller.is_admin else RunRecord.id.in_(_tenant_runs(caller.tenant))


def list_runs(registry: Registry, caller: Caller, wanted: RunFilter) -> tuple[list[dict[str, Any]], int]:
    """One page of the runs the caller may see, and how many match in all."""
    query = select(RunRecord, DatasetRecord.path, func.count().over()).outerjoin(
        DatasetRecord, DatasetRecord.id == RunRecord.dataset_id
    )
    visible = _visible_runs(caller)
    if visible is not None:
        query = query.where(visible)
    if wanted.status:
        query = query.where(RunRecord.status == wanted.status)
    if wanted.model:
        query = query.where(RunRecord.base_model == wanted.model)
    if wanted.text:
        needle = wanted.text.lower()
        query = query.where(
            or_(*(func.lower(column).contains(needle, autoescape=True)
                  for column in (RunRecord.id, RunRecord.base_model, DatasetRecord.path, RunRecord.method)))
        )  # fmt: skip
    column = RUN_COLUMNS.get(wanted.sort)
    order = column if column is not None else RunRecord.metrics[wanted.sort].as_float()
    order = order.desc() if wanted.descending else order.asc()
    query = query.order_by(order.nulls_last(), RunRecord.id.desc())
    query = query.limit(wanted.per_page).offset((wanted.page - 1) * wanted.per_page)
    with registry.session() as session:
        rows = session.execute(query).all()
    runs = [
        {
            "id": run.id,
            "status": run.status,
            "method": run.method,
            "base_model": run.base_model,
            "dataset": path,
            "dataset_id": run.dataset_id,
            "trained_tokens": run.trained_tokens,
            "metrics": run.metrics or {},
            "created_at": run.created_at,
        }
        for run, path, _ in rows
    ]
    return runs, (int(rows[0][2]) if rows else 0)


def run_choices(registry: Registry, caller: Caller) -> tuple[list[str], list[str]]:
    """The statuses and base models the caller's runs have (the list's filter menus)."""
    visible = _visible_runs(caller)
    with registry.session() as session:
        found = []
        for column in (RunRecord.status, RunRecord.base_model):
            query = select(column).distinct().order_by(column)
            found.append(list(session.scalars(query if visible is None else query.where(visible))))
        return found[0], found[1]


def can_see_run(registry: Registry, caller: Caller, run_id: str | None) -> bool:
    """Whether the caller may see run `run_id` (a run of no tenant: admins only)."""
    if caller.is_admin:
        return True
    if run_id is None:
        return False
    with registry.session() as session:
        owned = session.scalar(select(func.count()).select_from(_tenant_runs(caller.tenant).where(
            AdapterRecord.run_id == run_id).subquery()))  # fmt: skip
        return bool(owned)


def find_run(registry: Registry, caller: Caller, run_id: str) -> dict[str, Any] | None:
    """A run with its events, adapters and evaluations (`Registry.get_run`), if the caller may see it."""
    with registry.session() as session:
        if session.get(RunRecord, run_id) is None:  # the console links full ids: no prefix matching
            return None
    if not can_see_run(registry, caller, run_id):
        return None
    return registry.get_run(run_id)


def list_evaluations(registry: Registry, caller: Caller, run_id: str | None = None) -> list[dict[str, Any]]:
    """Evaluations (not bias audits or gate verdicts) the caller may see, newest first."""
    query = select(EvaluationRecord).order_by(EvaluationRecord.id.desc())
    if not caller.is_admin:
        query = query.where(EvaluationRecord.run_id.in_(_tenant_runs(caller.tenant)))
    if run_id is not None:
        query = query.where(EvaluationRecord.run_id == run_id)
    with registry.session() as session:
        return [
            {
                "id": record.id,
                "run_id": record.run_id,
                "dataset_id": record.dataset_id,
                "out_dir": record.out_dir,
                "kind": record.report.get("kind", "evaluation"),
                "task": record.report.get("task"),
                "models": [model.get("name") for model in record.report.get("models", [])],
                "created_at": record.created_at,
            }
            for record in session.scalars(query)
        ]


def find_evaluation(registry: Registry, caller: Caller, evaluation_id: int) -> dict[str, Any] | None:
    with registry.session() as session:
        record = session.get(EvaluationRecord, evaluation_id)
        if record is None:
            return None
        run_id = record.run_id
        found: dict[str, Any] = {"id": record.id, "run_id": record.run_id, "dataset_id": record.dataset_id,
                 "out_dir": record.out_dir, "report": record.report, "created_at": record.created_at}  # fmt: skip
    return found if can_see_run(registry, caller, run_id) else None


def _visible_datasets(caller: Caller) -> ColumnElement[bool] | None:
    if caller.is_admin:
        return None
    runs = _tenant_runs(caller.tenant)
    return or_(
        DatasetRecord.id.in_(select(RunRecord.dataset_id).where(RunRecord.id.in_(runs))),
        DatasetRecord.id.in_(select(RunRecord.val_dataset_id).where(RunRecord.id.in_(runs))),
        DatasetRecord.id.in_(select(EvaluationRecord.dataset_id).where(EvaluationRecord.run_id.in_(runs))),
    )


def list_datasets(registry: Registry, caller: Caller) -> list[dict[str, Any]]:
    """Datasets the caller may see, grouped into versions by folder (newest first within a folder)."""
    query = select(DatasetRecord).order_by(DatasetRecord.path, DatasetRecord.created_at.desc())
    visible = _visible_datasets(caller)
    with registry.session() as session:
        records = session.scalars(query if visible is None else query.where(visible)).all()
        return [_dataset_dict(record) for record in records]


def find_dataset(registry: Registry, caller: Caller, digest: str) -> dict[str, Any] | None:
    """A dataset with its other versions (same folder), the runs trained on it and its evaluations."""
    visible = _visible_datasets(caller)
    with registry.session() as session:
        query = select(DatasetRecord).where(DatasetRecord.id == digest)
        record = session.scalar(query if visible is None else query.where(visible))
        if record is None:
            return None
        found = _dataset_dict(record)
        versions = select(DatasetRecord).where(DatasetRecord.path == record.path)
        found["versions"] = [
            _dataset_dict(other)
            for other in session.scalars(
                (versions if visible is None else versions.where(visible)).order_by(DatasetRecord.created_at)
            )
        ]
        runs = select(RunRecord.id, RunRecord.status).where(
            or_(RunRecord.dataset_id == digest, RunRecord.val_dataset_id == digest)
        )
        run_visible = _visible_runs(caller)
        found["runs"] = [
            {"id": run_id, "status": status}
            for run_id, status in session.execute(runs if run_visible is None else runs.where(run_visible))
        ]
    found["evaluations"] = [
        evaluation
        for evaluation in list_evaluations(registry, caller)
        if evaluation["dataset_id"] == digest and evaluation["kind"] == "evaluation"
    ]
    return found


def _dataset_dict(record: DatasetRecord) -> dict[str, Any]:
    return {"id": record.id, "path": record.path, "rows": record.rows, "lineage": record.lineage,
            "created_at": record.created_at}  # fmt: skip
