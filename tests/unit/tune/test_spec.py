from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.config import ConfigError
from tunesmith.tune import load_tune_file

SEARCH = {"lr": {"low": 1e-5, "high": 1e-3}, "rank": {"choices": [8, 16]}}


def _write(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    ("search", "key"),
    [
        ({"lr": {"low": 0, "high": 1e-3}}, "tune.search.lr.low"),
        (
            {"lr": {"low": 1e-3, "high": 1e-5}},
            "tune.search.lr: Value error, low 0.001 must be below high 1e-05",
        ),
        ({"rank": {"choices": [0, 8]}}, "tune.search.rank: Value error, values must be at least 1"),
        (
            {"dropout": {"low": 0.1, "high": 1.5}},
            "tune.search.dropout: Value error, values must be in [0, 1)",
        ),
        ({"epochs": {"low": 1}}, "tune.search.epochs: Value error, give low and high (a range) or choices"),
        ({"tuning": ["lora", "half"]}, "tune.search.tuning.1"),
        ({"learning_rate": {"low": 1e-5, "high": 1e-3}}, "tune.search.learning_rate: Extra inputs"),
        ({}, "tune.search: Value error, name at least one hyperparameter"),
    ],
)
def test_a_bad_search_space_names_the_key(tmp_path: Path, search: dict, key: str) -> None:
    path = _write(tmp_path, {"train": {"data": "x.jsonl"}, "search": search})
    with pytest.raises(ConfigError, match="study.yaml") as error:
        load_tune_file(path, {})
    assert key in str(error.value)


def test_sqlite_storage_is_refused_for_parallel_workers_saying_why(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/study.db"
    path = _write(tmp_path, {"train": {"data": "x.jsonl"}, "search": SEARCH, "storage": url})
    assert load_tune_file(path, {}).workers == 1  # one writer: allowed
    result = CliRunner().invoke(app, ["tune", "--config", str(path), "--workers", "2"])
    assert result.exit_code != 0
    assert f"tune: Value error, storage {url}: SQLite is not safe for parallel writers" in str(
        result.exception
    )
    assert not (tmp_path / "study.db").exists()


def test_the_grid_sampler_needs_choices_and_base_resolves_next_to_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"grid needs choices for every searched hyperparameter: \['lr'\]"):
        load_tune_file(_write(tmp_path, {"train": {"data": "x"}, "search": SEARCH, "sampler": "grid"}), {})
    spec = load_tune_file(_write(tmp_path, {"base": "train.yaml", "search": SEARCH}), {"trials": 7})
    assert spec.base == tmp_path / "train.yaml" and spec.trials == 7 and spec.study == "study"
    with pytest.raises(ConfigError, match="tune: Value error, give the training config"):
        load_tune_file(_write(tmp_path, {"search": SEARCH}), {})


def test_the_shipped_tune_config_loads_with_its_base() -> None:
    from tests.conftest import REPO
    from tunesmith.tune.study import base_section

    spec = load_tune_file(REPO / "configs" / "tune" / "quickstart.yaml", {})
    assert spec.study == "quickstart" and spec.search.lr is not None
    assert base_section(spec)["name"] == "bramble-voice"
