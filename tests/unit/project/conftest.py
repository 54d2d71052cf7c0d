"""A project made from a template and shrunk to seconds: the tiny model, two steps, four test examples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunesmith.project.templates import init_project

ProjectMaker = Callable[..., Path]


def edit_project(directory: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the project's tunesmith.yaml after `change` edits it (comments are lost; fine in tests)."""
    path = directory / "tunesmith.yaml"
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def shrink(spec: dict[str, Any], model: Path) -> None:
    """The tiny model, two optimizer steps, four test examples of four tokens, a gate that passes."""
    spec["model"] = str(model)
    spec["train"] |= {"max_steps": 2, "eval_every": 1, "save_every": 2}
    spec["eval"] |= {"limit": 4, "max_new_tokens": 4, "bootstrap_samples": 100, "review_examples": 2}
    spec["gate"] |= {"significant": False, "min_difference": -1000.0}  # a random model wins nothing


@pytest.fixture
def make_project(tmp_path: Path, tiny_model_dir: Path) -> ProjectMaker:
    def make(template: str = "local-marketing", name: str = "shop") -> Path:
        directory = tmp_path / name
        init_project(directory, template)
        edit_project(directory, lambda spec: shrink(spec, tiny_model_dir))
        return directory

    return make
