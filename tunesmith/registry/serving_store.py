"""Queries for serving: tenants and keys, adapter ownership, deployments with A/B variants, and
(inherited from `request_log`) the request log and feedback. No torch.

Owns: what the server and the `keys`/`adapters`/`deploy` commands read and write, and the sticky
variant choice (a hash of deployment and user). Does not own: the schema (see `serving`), the records
it returns and who may see what (see `serving_records`), HTTP, or loading adapters into a model.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tunesmith.audit.trail import append, local_actor
from tunesmith.config import ConfigError
from tunesmith.registry.bias_gate import check_bias_audit
from tunesmith.registry.models import AdapterRecord
from tunesmith.registry.request_log import NotFoundError, RequestLogQueries
from tunesmith.registry.serving import (
    AdapterOwnerRecord,
    ApiKeyRecord,
    DeploymentChangeRecord,
    DeploymentRecord,
    TenantRecord,
)
from tunesmith.registry.serving_records import (
    AdapterVersion,
    Caller,
    Deployment,
    DeploymentDetail,
    Role,
    VariantWeight,
)
from tunesmith.registry.store import Registry

__all__ = [  # Caller and AdapterVersion are served from here too: the callers of these queries use them
    "BASE_MODEL_NAME",
    "AdapterVersion",
    "Caller",
    "NotFoundError",
    "Role",
    "ServingStore",
    "choose_variant",
    "hash_key",
    "parse_model_ref",
    "validate_variants",
]

BASE_MODEL_NAME = "base"  # what clients call the bare base model


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_model_ref(model: str) -> tuple[str, int | None]:
    """`acme` → ("acme", None); `acme@3` → ("acme", 3)."""
    name, sep, version = model.partition("@")
    if not sep:
        return name, None
    if not version.isdigit():
        raise NotFoundError(f"{model}: a version after '@' must be a number, e.g. {name}@2")
    return name, int(version)


def choose_variant(deployment: str, user: str | None, variants: list[VariantWeight]) -> str:
    """The variant model for `user`: sticky (a hash of deployment and user), weighted; random without a user."""
    total = sum(variant["weight"] for variant in variants)
    if user is None:
        point = random.random() * total
    else:
        digest = hashlib.sha256(f"{deployment}\0{user}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * total
    for variant in variants:
        point -= variant["weight"]
        if point < 0:
            return str(variant["model"])
    return str(variants[-1]["model"])


def validate_variants(variants: list[VariantWeight]) -> list[VariantWeight]:
    """Variants as `[{"model": str, "weight": float >= 0}]` with a positive total; raises ConfigError."""
    if not variants:
        raise ConfigError("a deployment needs at least one variant, e.g. acme@3=90")
    cleaned: list[VariantWeight] = []
    for variant in variants:
        weight = float(variant["weight"])
        if weight < 0:
            raise ConfigError(f"variant {variant['model']}: weight must be >= 0, got {weight}")
        cleaned.append({"model": str(variant["model"]), "weight": weight})
    if sum(variant["weight"] for variant in cleaned) <= 0:
        raise ConfigError("variant weights must not all be 0")
    return cleaned


class ServingStore(RequestLogQueries):
    """Serving queries over a connected `Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # ------------------------------------------------------------------ tenants and keys

    def create_key(
        self,
        tenant: str | None,
        *,
        admin: bool,
        role: Role | None = None,
        name: str | None = None,
        actor: str | None = None,
    ) -> str:
        """A new API key (returned once, stored hashed); creates the tenant if new.

        `role` defaults to admin for `admin`, else viewer; `role=Role.admin` makes an admin key. A
        reviewer key without a tenant judges the review tasks that have none. `actor` (here and in the
        other changing methods) is who the audit record names; None: the local OS user (the CLI).
        """
        if admin and role not in (None, Role.admin):
            raise ConfigError(f"an admin key has the admin role, not {role}")
        role = role or (Role.admin if admin else Role.viewer)
        admin = role is Role.admin
        if tenant is None and role is Role.viewer:
            raise ConfigError("a key needs --tenant NAME, or --admin for an admin key")
        key = "ts-" + secrets.token_urlsafe(32)
        with self._session() as session, session.begin():
            if tenant is not None and session.get(TenantRecord, tenant) is None:
                session.add(TenantRecord(name=tenant))
                session.flush()
            record = ApiKeyRecord(key_hash=hash_key(key), prefix=key[:10], tenant=tenant, is_admin=admin,
                                  name=name, role=str(role))  # fmt: skip
            session.add(record)
            session.flush()
            after = {
                "prefix": record.prefix,
                "tenant": tenant,
                "admin": admin,
                "name": name,
                "role": str(role),
            }
            append(session, actor or local_actor(), "key.create", f"key:{record.id}", None, after)
        return key

    def list_keys(self) -> list[dict[str, Any]]:
        with self._session() as session:
            keys = session.scalars(select(ApiKeyRecord).order_by(ApiKeyRecord.id)).all()
            return [
                {
                    "id": k.id,
                    "prefix": k.prefix,
                    "name": k.name,
                    "role": k.role,
                    "tenant": k.tenant,
                    "admin": k.is_admin,
                    "revoked": k.revoked,
                    "created_at": k.created_at.isoformat(),
                }
                for k in keys
            ]

    def revoke_key(self, key_id: int, *, actor: str | None = None) -> None:
        with self._session() as session, session.begin():
            record = session.get(ApiKeyRecord, key_id)
            if record is None:
                raise ConfigError(f"no API key with id {key_id} (see `tunesmith keys list`)")
            before = {"revoked": record.revoked}
            record.revoked = True
            append(session, actor or local_actor(), "key.revoke", f"key:{key_id}", before, {"revoked": True})

    def authenticate(self, key: str) -> Caller | None:
        with self._session() as session:
            record = session.scalar(select(ApiKeyRecord).where(ApiKeyRecord.key_hash == hash_key(key)))
            if record is None or record.revoked:
                return None
            role = Role(record.role) if record.role else (Role.admin if record.is_admin else Role.viewer)
            return Caller(record.tenant, record.is_admin, record.id, name=record.name, role=role)

    # ------------------------------------------------------------------ adapters

    def register_adapter(
        self,
        name: str,
        path: Path,
        base_model: str,
        *,
        tenant: str | None,
        run_id: str | None = None,
        actor: str | None = None,
    ) -> AdapterVersion:
        """Record `path` as the next version of `name` (or reuse the latest if it is the same folder)."""
        if not name or "@" in name or name == BASE_MODEL_NAME:
            raise ConfigError(f"{name!r}: an adapter name must be non-empty, without '@', and not 'base'")
        with self._session() as session, session.begin():
            owner = session.get(AdapterOwnerRecord, name)
            if tenant is not None:
                if owner is not None and owner.tenant != tenant:
                    raise ConfigError(f"adapter {name} already belongs to another tenant")
                if session.get(TenantRecord, tenant) is None:
                    session.add(TenantRecord(name=tenant))
                    session.flush()
                if owner is None:
                    session.add(AdapterOwnerRecord(name=name, tenant=tenant))
            latest = session.scalar(
                select(AdapterRecord).where(AdapterRecord.name == name).order_by(AdapterRecord.version.desc())
            )
            if latest is not None and Path(latest.path) == path:
                return _version(latest, tenant or (owner.tenant if owner else None))
            record = AdapterRecord(
                name=name,
                version=(latest.version if latest else 0) + 1,
                run_id=run_id,
                path=str(path),
                base_model=base_model,
            )
            session.add(record)
            session.flush()
            after = {"path": str(path), "base_model": base_model, "run_id": run_id, "tenant": tenant}
            append(
                session, actor or local_actor(), "adapter.register", f"{name}@{record.version}", None, after
            )
            return _version(record, tenant or (owner.tenant if owner else None))

    def register_source(
        self,
        name: str,
        source: str,
        *,
        tenant: str | None,
        check: Callable[[Path], None] | None = None,
        actor: str | None = None,
    ) -> AdapterVersion:
        """Register an adapter folder, or the adapter of a run (id or folder), as the next version of `name`.

        `check(adapter_folder)` runs before anything is recorded (the CLI passes the serving check, so an
        adapter made elsewhere is refused at `register`, not at its first request).
        """
        path = Path(source).expanduser()
        run_id = None
        if not (path / "adapter_config.json").is_file():
            run_dir = self.registry.find_run_dir(source)
            run = self.registry.get_run(source)
            run_id = run["id"] if run is not None else None
            path = run_dir / "adapter"
            if not (path / "adapter_config.json").is_file():
                raise ConfigError(
                    f"{source}: the run has no LoRA adapter (a full fine-tune, or not finished)"
                )
        if check is not None:
            check(path)
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
        base_model = str(config.get("base_model_name_or_path") or "")
        return self.register_adapter(
            name, path.resolve(), base_model, tenant=tenant, run_id=run_id, actor=actor
        )

    def find_adapter(self, caller: Caller, name: str, version: int | None) -> AdapterVersion:
        """The adapter version `caller` asked for; NotFoundError if missing or not theirs."""
        with self._session() as session:
            owner = session.get(AdapterOwnerRecord, name)
            tenant = owner.tenant if owner else None
            if not caller.can_see(tenant):
                raise NotFoundError(name)
            query = select(AdapterRecord).where(AdapterRecord.name == name)
            if version is not None:
                query = query.where(AdapterRecord.version == version)
            record = session.scalar(query.order_by(AdapterRecord.version.desc()))
            if record is None:
                raise NotFoundError(name)
            return _version(record, tenant)

    def visible_adapters(self, caller: Caller) -> list[AdapterVersion]:
        """The latest version of each adapter name the caller may use."""
        with self._session() as session:
            latest = (
                select(AdapterRecord.name, func.max(AdapterRecord.version).label("version"))
                .group_by(AdapterRecord.name)
                .subquery()
            )
            rows = session.execute(
                select(AdapterRecord, AdapterOwnerRecord.tenant)
                .join(
                    latest,
                    (AdapterRecord.name == latest.c.name) & (AdapterRecord.version == latest.c.version),
                )
                .outerjoin(AdapterOwnerRecord, AdapterOwnerRecord.name == AdapterRecord.name)
                .order_by(AdapterRecord.name)
            ).all()
            return [_version(r, t) for r, t in rows if caller.can_see(t)]

    # ------------------------------------------------------------------ deployments

    def create_deployment(
        self, name: str, variants: list[VariantWeight], *, tenant: str | None, actor: str | None = None
    ) -> None:
        variants = self._check_models(tenant, validate_variants(variants))
        with self._session() as session, session.begin():
            if session.get(DeploymentRecord, name) is not None:
                raise ConfigError(f"deployment {name} exists; change it with `tunesmith deploy weights`")
            if tenant is not None and session.get(TenantRecord, tenant) is None:
                session.add(TenantRecord(name=tenant))
            session.add(DeploymentRecord(name=name, tenant=tenant, variants=variants))
            session.flush()
            session.add(DeploymentChangeRecord(deployment=name, action="create", variants=variants))
            after = {"tenant": tenant, "variants": variants}
            append(session, actor or local_actor(), "deployment.create", name, None, after)

    def _check_models(self, tenant: str | None, variants: list[VariantWeight]) -> list[VariantWeight]:
        """Every variant must be `base` or an adapter the deployment's tenant owns; pins `name` to its latest."""
        owner = Caller(tenant=tenant, is_admin=tenant is None)
        checked: list[VariantWeight] = []
        for variant in variants:
            model = variant["model"]
            if model != BASE_MODEL_NAME:
                try:
                    adapter = self.find_adapter(owner, *parse_model_ref(model))
                except NotFoundError as error:
                    whose = f"tenant {tenant}" if tenant else "the registry"
                    raise ConfigError(f"variant {model}: no such adapter for {whose}") from error
                model = adapter.key
            checked.append({"model": model, "weight": variant["weight"]})
        return checked

    def find_deployment(self, caller: Caller, name: str) -> DeploymentDetail | None:
        """A deployment the caller may use, with its history; None if missing or not theirs."""
        with self._session() as session:
            record = session.get(DeploymentRecord, name)
            if record is None or not caller.can_see(record.tenant):
                return None
            changes = session.scalars(
                select(DeploymentChangeRecord)
                .where(DeploymentChangeRecord.deployment == name)
                .order_by(DeploymentChangeRecord.id)
            ).all()
            return {
                "name": record.name,
                "tenant": record.tenant,
                "variants": record.variants,
                "history": [
                    {"action": c.action, "variants": c.variants, "at": c.created_at.isoformat()}
                    for c in changes
                ],
            }

    def list_deployments(self, caller: Caller) -> list[Deployment]:
        with self._session() as session:
            records = session.scalars(select(DeploymentRecord).order_by(DeploymentRecord.name)).all()
            return [
                {"name": r.name, "tenant": r.tenant, "variants": r.variants}
                for r in records
                if caller.can_see(r.tenant)
            ]

    def set_weights(
        self,
        name: str,
        variants: list[VariantWeight],
        *,
        action: str = "set_weights",
        require_bias_audit: bool = False,
        actor: str | None = None,
    ) -> dict[str, int]:
        """Replace the deployment's variants. With `require_bias_audit`, every adapter version that gets
        traffic needs a passing bias audit (`bias_gate`); returns those audits' ids by variant, which
        the audit record keeps too. Raises NotFoundError, ConfigError (BiasAuditRequired)."""
        with self._session() as session:
            record = session.get(DeploymentRecord, name)
            if record is None:
                raise NotFoundError(f"no deployment named {name}")
            tenant = record.tenant
        variants = self._check_models(tenant, validate_variants(variants))
        audits = self._bias_audits(tenant, variants) if require_bias_audit else {}
        after: dict[str, Any] = {"variants": variants} | (
            {"bias_audits": audits} if require_bias_audit else {}
        )
        with self._session() as session, session.begin():
            record = session.get(DeploymentRecord, name)
            assert record is not None
            before = {"variants": list(record.variants)}
            record.variants = variants
            session.add(DeploymentChangeRecord(deployment=name, action=action, variants=variants))
            append(session, actor or local_actor(), f"deployment.{action}", name, before, after)
        return audits

    def _bias_audits(self, tenant: str | None, variants: list[VariantWeight]) -> dict[str, int]:
        owner = Caller(tenant=tenant, is_admin=tenant is None)
        return {
            variant["model"]: check_bias_audit(
                self.registry, self.find_adapter(owner, *parse_model_ref(variant["model"]))
            )
            for variant in variants
            if variant["weight"] > 0 and variant["model"] != BASE_MODEL_NAME
        }

    def promote(
        self, name: str, model: str, *, require_bias_audit: bool = False, actor: str | None = None
    ) -> dict[str, int]:
        """Send all traffic to `model` (which need not have been a variant before); see `set_weights`."""
        variants: list[VariantWeight] = [{"model": model, "weight": 100.0}]
        return self.set_weights(
            name, variants, action="promote", require_bias_audit=require_bias_audit, actor=actor
        )

    def rollback(self, name: str, *, actor: str | None = None) -> list[VariantWeight]:
        """Restore the variants in force before the latest change; returns them."""
        with self._session() as session:
            changes = session.scalars(
                select(DeploymentChangeRecord)
                .where(DeploymentChangeRecord.deployment == name)
                .order_by(DeploymentChangeRecord.id.desc())
                .limit(2)
            ).all()
        if not changes:
            raise NotFoundError(f"no deployment named {name}")
        if len(changes) < 2:
            raise ConfigError(f"deployment {name} has no earlier variants to roll back to")
        previous = list(changes[1].variants)
        self.set_weights(name, previous, action="rollback", actor=actor)
        return previous

    def record_action(
        self,
        actor: str,
        action: str,
        target: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        """Record an action that changes no registry row (e.g. an adapter loaded into the server)."""
        with self._session() as session, session.begin():
            append(session, actor, action, target, before, after)


def _version(record: AdapterRecord, tenant: str | None) -> AdapterVersion:
    return AdapterVersion(record.name, record.version, record.path, record.base_model, tenant)
