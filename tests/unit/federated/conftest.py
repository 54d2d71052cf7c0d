"""Fixtures for the federated tests that run the server's rounds in process, without a Flower runtime."""

from __future__ import annotations

import pytest


@pytest.fixture
def flower_task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a Flower runtime sets before a ServerApp builds messages."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 0)
