"""Audit fixtures: the serve tests' adapters (the trail records adapter and deployment changes)."""

from tests.unit.serve.conftest import adapter_dirs

__all__ = ["adapter_dirs"]
