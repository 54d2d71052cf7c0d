"""tunesmith: from raw domain data to a fine-tuned, evaluated open LLM.

The public library API. Names resolve lazily, so importing tunesmith (and `tunesmith --help`)
does not pay for torch until a function that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunesmith.config import DataFormat, EvalSpec, EvalTask, LoraSpec, PrepareSpec, ServeSpec, TrainSpec
    from tunesmith.data.ingest import load_examples
    from tunesmith.data.prepare import prepare_data
    from tunesmith.data.records import DataError, Example
    from tunesmith.eval.during_training import evaluate_during_training
    from tunesmith.eval.evaluate import Candidate, evaluate_generation, evaluate_models
    from tunesmith.export.core import export_model
    from tunesmith.export.errors import ParityError
    from tunesmith.loop.policy import LoopPolicySpec
    from tunesmith.loop.run import run_loop
    from tunesmith.models.loading import resolve_model
    from tunesmith.project.pipeline import project_status, run_project
    from tunesmith.project.spec import ProjectSpec
    from tunesmith.project.templates import init_project
    from tunesmith.quickstart import run_quickstart
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry
    from tunesmith.serve.app import create_app
    from tunesmith.train.dpo import train_dpo
    from tunesmith.train.kto import train_kto
    from tunesmith.train.orpo import train_orpo
    from tunesmith.train.records import TrainResult
    from tunesmith.train.sft import train_sft
    from tunesmith.train.trackers import report_run

__version__ = "0.1.0"

_EXPORTS = {
    "Candidate": "tunesmith.eval.evaluate",
    "DataError": "tunesmith.data.records",
    "DataFormat": "tunesmith.config",
    "EvalSpec": "tunesmith.config",
    "EvalTask": "tunesmith.config",
    "Example": "tunesmith.data.records",
    "LoopPolicySpec": "tunesmith.loop.policy",
    "LoraSpec": "tunesmith.config",
    "ParityError": "tunesmith.export.errors",
    "PrepareSpec": "tunesmith.config",
    "ProjectSpec": "tunesmith.project.spec",
    "Registry": "tunesmith.registry.store",
    "ServeSpec": "tunesmith.config",
    "ServingStore": "tunesmith.registry.serving_store",
    "TrainResult": "tunesmith.train.records",
    "TrainSpec": "tunesmith.config",
    "create_app": "tunesmith.serve.app",
    "evaluate_during_training": "tunesmith.eval.during_training",
    "evaluate_generation": "tunesmith.eval.evaluate",
    "evaluate_models": "tunesmith.eval.evaluate",
    "export_model": "tunesmith.export.core",
    "init_project": "tunesmith.project.templates",
    "load_examples": "tunesmith.data.ingest",
    "prepare_data": "tunesmith.data.prepare",
    "project_status": "tunesmith.project.pipeline",
    "report_run": "tunesmith.train.trackers",
    "resolve_model": "tunesmith.models.loading",
    "run_loop": "tunesmith.loop.run",
    "run_project": "tunesmith.project.pipeline",
    "run_quickstart": "tunesmith.quickstart",
    "train_dpo": "tunesmith.train.dpo",
    "train_kto": "tunesmith.train.kto",
    "train_orpo": "tunesmith.train.orpo",
    "train_sft": "tunesmith.train.sft",
}

__all__ = [
    "Candidate",
    "DataError",
    "DataFormat",
    "EvalSpec",
    "EvalTask",
    "Example",
    "LoopPolicySpec",
    "LoraSpec",
    "ParityError",
    "PrepareSpec",
    "ProjectSpec",
    "Registry",
    "ServeSpec",
    "ServingStore",
    "TrainResult",
    "TrainSpec",
    "create_app",
    "evaluate_during_training",
    "evaluate_generation",
    "evaluate_models",
    "export_model",
    "init_project",
    "load_examples",
    "prepare_data",
    "project_status",
    "report_run",
    "resolve_model",
    "run_loop",
    "run_project",
    "run_quickstart",
    "train_dpo",
    "train_kto",
    "train_orpo",
    "train_sft",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tunesmith' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
