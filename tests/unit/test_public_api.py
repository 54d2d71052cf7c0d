from __future__ import annotations

import subprocess
import sys

import tunesmith


def test_exports_are_pinned_sorted_and_resolvable() -> None:
    assert tunesmith.__all__ == sorted(tunesmith.__all__)
    assert tunesmith.__all__ == [
        "Candidate", "DataError", "DataFormat", "EvalSpec", "EvalTask", "Example", "LoopPolicySpec", "LoraSpec", "ParityError", "PrepareSpec",
        "ProjectSpec", "Registry", "ServeSpec", "ServingStore", "TrainResult", "TrainSpec", "create_app",
        "evaluate_during_training", "evaluate_generation", "evaluate_models", "export_model", "init_project", "load_examples",
        "prepare_data", "project_status", "report_run", "resolve_model", "run_loop", "run_project", "run_quickstart", "train_dpo",
        "train_kto", "train_orpo", "train_sft",
    ]  # fmt: skip
    for name in tunesmith.__all__:
        assert getattr(tunesmith, name) is not None


def test_cli_help_does_not_import_torch() -> None:
    code = "import sys; from tunesmith.cli import app; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
