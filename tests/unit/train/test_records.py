from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.config import ConfigError
from tunesmith.train.records import StepPlan, read_step_plan

PLAN = StepPlan(
    pass_tokens=2048, gradient_checkpointing=False, memory_gb={"total": 3.7}, budget_gb=12.0, fits=True,
    fused_layers=True, notes=["why"],
)  # fmt: skip


def test_a_step_plan_reads_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN.to_record()))
    assert read_step_plan(path) == PLAN


def test_a_plan_without_a_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    # Earlier builds wrote no version and left fused_layers out; guessing it would change how a resumed
    # run steps.
    record = PLAN.to_dict()
    del record["fused_layers"]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(record))
    with pytest.raises(ConfigError, match="earlier tunesmith.*start a new run from its config.yaml"):
        read_step_plan(path)
