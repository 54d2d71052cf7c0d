from __future__ import annotations

from pathlib import Path

from tunesmith.config import default_database_url
from tunesmith.quickstart import run_quickstart
from tunesmith.registry.store import Registry


def test_quickstart_pipeline_runs_end_to_end_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    baselines = []
    result = run_quickstart(
        tmp_path / "run", model=str(tiny_model_dir), show_progress=False, on_baseline=baselines.append
    )
    assert [m["name"] for m in baselines[0]["models"]] == ["base"]  # scored before any training
    assert [m["name"] for m in result.report["models"]] == ["base", "fine-tuned"]
    assert result.train.steps == 50  # one epoch of 200 examples, 4 per step
    for name in ("report.json", "report.md", "predictions.jsonl"):
        assert (result.eval_dir / name).is_file()
    assert len((result.eval_dir / "predictions.jsonl").read_text().splitlines()) == 80
    run = Registry(default_database_url()).connect().get_run(result.train.run_id)
    assert run is not None and run["status"] == "succeeded"
    assert run["adapters"][0]["name"] == "bramble-voice"
    assert [m["name"] for m in run["evaluations"][0]["models"]] == ["base", "fine-tuned"]
