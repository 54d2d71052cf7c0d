"""What serving queries hand back: callers, adapter versions and deployments, as typed records. No torch.

Owns: `Caller` and its one visibility rule (`can_see`: an admin sees everything, a tenant its own),
`AdapterVersion`, and the deployment shapes the store returns and the `deploy` command and the admin
API print (`TypedDict`s, so they are the JSON as well as its type). Does not own: queries (see
`serving_store`) or the tables (see `serving`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from typing_extensions import TypedDict  # pydantic (FastAPI responses) needs this one before 3.12


class Role(StrEnum):
    """What a key's account may do (keys made before roles: admin keys are admins, the rest viewers)."""

    admin = "admin"  # everything: admin endpoints, every tenant, creating review tasks
    reviewer = "reviewer"  # judges review items of its tenant's tasks (and reads what a viewer reads)
    viewer = "viewer"  # reads its tenant's runs, models and review results; calls its models


@dataclass(frozen=True)
class Caller:
    """Who is calling: a tenant's key, an admin key, or anyone when auth is off (admin, no tenant)."""

    tenant: str | None
    is_admin: bool
    key_id: int | None = None  # the API key's id (the audit trail's actor); None when auth is off
    name: str | None = None  # the key's account name (`keys create --name`); None: an unnamed key
    role: Role | None = None  # None: from `is_admin` (admin, else viewer), as for a Caller made in code

    @property
    def account_role(self) -> Role:
        """The role this caller acts in."""
        if self.role is not None:
            return self.role
        return Role.admin if self.is_admin else Role.viewer

    def can_see(self, owner: str | None) -> bool:
        """Whether this caller may see (and call) something owned by tenant `owner` (None: no tenant)."""
        return self.is_admin or (owner is not None and owner == self.tenant)


@dataclass(frozen=True)
class AdapterVersion:
    name: str
    version: int
    path: str
    base_model: str
    tenant: str | None

    @property
    def key(self) -> str:
        """`name@version`: how the server names a loaded adapter and reports the variant."""
        return f"{self.name}@{self.version}"


class VariantWeight(TypedDict):
    """One variant of a deployment: `base` or an adapter version, and its share of traffic."""

    model: str
    weight: float


class DeploymentChange(TypedDict):
    """One change to a deployment's variants (create, set_weights, promote, rollback)."""

    action: str
    variants: list[VariantWeight]
    at: str  # ISO 8601


class Deployment(TypedDict):
    """A deployment as listed: its name, owning tenant and current variants."""

    name: str
    tenant: str | None
    variants: list[VariantWeight]


class DeploymentDetail(Deployment):
    """A deployment with every change to it, oldest first."""

    history: list[DeploymentChange]
