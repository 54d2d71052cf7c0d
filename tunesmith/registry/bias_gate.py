"""The bias audit as a promotion gate: an adapter version gets traffic only where the registry's latest bias
audit of exactly that version passed its gate. No torch.

Owns: finding the bias audits recorded of one adapter version (by `tunesmith audit bias` or a loop's gate;
the audit names the version it loaded, `name@version`, and the adapter folder) and the refusal, which
names the command to run when there is none and the failed attribute and bound when the latest failed.
The latest audit decides: a passing one older than a failing one does not count. Does not own: running
an audit (`audit.bias`), its gate (`audit.bias_findings`) or changing a deployment (`serving_store`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from tunesmith.config import ConfigError
from tunesmith.registry.models import EvaluationRecord
from tunesmith.registry.serving_records import AdapterVersion
from tunesmith.registry.store import Registry


class BiasAuditRequired(ConfigError):
    """An adapter version was to get traffic without a passing bias audit where one is required."""


def bias_audits(registry: Registry, adapter: AdapterVersion) -> list[dict[str, Any]]:
    """The bias audits recorded of exactly `adapter`, newest first: evaluation id, report folder, gate."""
    with registry.session() as session:
        records = session.scalars(
            select(EvaluationRecord)
            .where(EvaluationRecord.report["kind"].as_string() == "bias_audit")
            .order_by(EvaluationRecord.id.desc())
        ).all()
        return [
            {"id": record.id, "out_dir": record.out_dir, "gate": record.report["gate"]}
            for record in records
            if _is_of(record.report["target"], adapter)
        ]


def _is_of(target: dict[str, Any], adapter: AdapterVersion) -> bool:
    """Whether an audit's target is `adapter`: audited by `name@version`, or its folder (a run audited by id)."""
    if target["name"] == adapter.key:
        return True
    folder = target.get("adapter_dir")  # audits recorded before the folder was kept name only their target
    return folder is not None and Path(folder).resolve() == Path(adapter.path).resolve()


def check_bias_audit(registry: Registry, adapter: AdapterVersion) -> int:
    """The id of `adapter`'s latest bias audit, whose gate passed.

    Raises:
        BiasAuditRequired: there is none (the message names the command), or the latest failed (the
            message names each failed attribute, measure and upper bound).
    """
    audits = bias_audits(registry, adapter)
    if not audits:
        raise BiasAuditRequired(
            f"{adapter.key} has no bias audit in the registry; run `tunesmith audit bias {adapter.key} "
            "--data TEST` (its gate must pass) before it gets traffic"
        )
    latest = audits[0]
    if not latest["gate"]["passed"]:
        raise BiasAuditRequired(
            f"{adapter.key} failed its latest bias audit (evaluation {latest['id']}, {latest['out_dir']}): "
            + " | ".join(latest["gate"]["failures"])
        )
    return int(latest["id"])
