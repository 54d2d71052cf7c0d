"""`data prepare` and `train --dry-run` estimate the same job's time with one function, so they agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO
from tunesmith.config import PrepareSpec, TrainSpec
from tunesmith.data.prepare import prepare_data
from tunesmith.train.dry_run import plan_training

# An even number of earlier runs: the middle two differ, so a different median rule would show.
SPEEDS = (1000.0, 3000.0)


def test_prepare_and_dry_run_estimate_the_same_time(tmp_path: Path, tiny_model_dir: Path) -> None:
    class Runs:
        def record_dataset(self, *args: Any) -> None: ...

        def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
            run = {"status": "succeeded", "base_model": str(tiny_model_dir), "method": "lora"}
            return [{**run, "metrics": {"tokens_per_second": s, "device": "cpu"}} for s in SPEEDS]

    prepared = prepare_data(
        PrepareSpec(
            inputs=[DEMO / "train.jsonl"], out=tmp_path / "data", model=str(tiny_model_dir), epochs=2
        ),
        registry=Runs(),
    )
    spec = TrainSpec(model=str(tiny_model_dir), data=tmp_path / "data", epochs=2, batch_size=1)
    plan = plan_training(spec, lambda *key: list(SPEEDS))

    estimate = prepared.report["estimate"]
    assert plan.total_tokens == estimate["total_tokens"]
    assert plan.tokens_per_second == estimate["cpu_tokens_per_second"] == 2000.0
    assert plan.throughput_source == estimate["cpu_throughput_source"]
    assert plan.estimated_seconds == pytest.approx(estimate["cpu_minutes"] * 60, abs=0.1)
