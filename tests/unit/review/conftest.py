"""A registry with an admin, two reviewers and a viewer of tenant acme, and a reviewer of globex."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tunesmith.registry.serving_records import Caller, Role
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.review.records import NewItem
from tunesmith.review.store import ReviewStore


@dataclass(frozen=True)
class People:
    admin: Caller
    alice: Caller
    bob: Caller
    viewer: Caller
    carol: Caller  # a reviewer of another tenant


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(f"sqlite:///{tmp_path / 'registry.db'}").connect()


@pytest.fixture
def any_registry(database_url: str) -> Registry:
    """SQLite, then PostgreSQL (where the test server is installed)."""
    return Registry(database_url).connect()


@pytest.fixture
def store(registry: Registry) -> ReviewStore:
    return ReviewStore(registry)


@pytest.fixture
def people(registry: Registry) -> People:
    return make_people(registry)


def make_people(registry: Registry) -> People:
    keys = ServingStore(registry)

    def caller(tenant: str | None, role: Role, name: str) -> Caller:
        found = keys.authenticate(keys.create_key(tenant, admin=role is Role.admin, role=role, name=name))
        assert found is not None
        return found

    return People(
        admin=caller(None, Role.admin, "root"),
        alice=caller("acme", Role.reviewer, "alice"),
        bob=caller("acme", Role.reviewer, "bob"),
        viewer=caller("acme", Role.viewer, "vic"),
        carol=caller("globex", Role.reviewer, "carol"),
    )


def pairwise_items(count: int, models: tuple[str, str] = ("acme@2", "base")) -> list[NewItem]:
    """Items whose output texts name their model, so a test can tell which is which."""
    return [
        NewItem(
            [{"role": "user", "content": f"write tagline {index}"}],
            f"reference {index}",
            [{"model": model, "text": f"{model} answer {index}"} for model in models],
            {"example": index},
        )
        for index in range(count)
    ]


DEMO_TEST = Path(__file__).resolve().parents[3] / "tunesmith" / "data" / "demo" / "test.jsonl"


def write_evaluation(directory: Path, models: list[str], examples: int = 6) -> Path:
    """An evaluation folder as `tunesmith eval` writes it (the parts review reads) over demo examples."""
    from tests.conftest import write_jsonl
    from tunesmith.data.ingest import load_examples
    from tunesmith.data.records import dataset_hash

    lines = DEMO_TEST.read_text(encoding="utf-8").splitlines()[:examples]
    data = directory / "test.jsonl"
    directory.mkdir(parents=True, exist_ok=True)
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    loaded = load_examples(data)
    rows = [
        {"index": index, "source": example.source, "model": model, "prompt": f"<rendered {index}>",
         "prediction": f"{model} answer {index}", "reference": example.reference(), "references": [example.reference()],
         "statistics": {}}
        for model in models
        for index, example in enumerate(loaded)
    ]  # fmt: skip
    write_jsonl(directory / "predictions.jsonl", rows)
    report = {"data": {"path": str(data), "hash": dataset_hash(loaded), "examples": len(loaded)}}
    (directory / "report.json").write_text(json.dumps(report), encoding="utf-8")
    return directory
