"""Hyperparameter search against a grid: does `tunesmith tune` with a budget of 12 full runs (pruning on)
reach within 1% of the best validation loss of a 64-configuration grid over the same space?

One command:  .venv/bin/python benchmarks/tune_vs_grid.py [--json-out FILE]
Smoke run:    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tune_vs_grid.py --tiny --intents 5 \\
                  --train-per-intent 12 --val-per-intent 4 --epochs 1

The task: CLINC150 intent classification (`../shared/datasets/clinc150/data_full.json`), `--intents`
intents with `--train-per-intent` training and `--val-per-intent` validation utterances each, as
`text`/`label` rows; the loss is on the label. The space, the same for both: lr {1e-4, 3e-4, 1e-3, 3e-3}
x LoRA rank {4, 8, 16, 32} x dropout {0, 0.1} x batch size {4, 8} = 64 configurations, `--epochs` each.
1. Grid: every configuration, trained to the end (no pruning): `tunesmith tune` with `sampler: grid`.
2. Search: TPE (seed 42) with the median pruner over the same choices, trials started until the examples
   they trained on (pruned trials count what they ran) add up to 12 full runs' worth.
Both go through the library `tunesmith tune` runs; every trial is a recorded run. Reported: each side's
best validation loss, the gap, the runs and the full-run equivalents each spent, wall time.
`--tiny` trains a 2-layer random Llama built here (as the tests' `tiny_model_dir`) instead of
`--model` (default the embedded SmolLM2-135M-Instruct): minutes instead of hours on a CPU, but a model
that learns from scratch, so the figures say whether the search machinery works, not what SmolLM2
reaches. Results, dated, with their commands and machines: benchmarks/RESULTS.md ("Hyperparameter search").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json"
SPACE = {
    "lr": {"choices": [1e-4, 3e-4, 1e-3, 3e-3]},
    "rank": {"choices": [4, 8, 16, 32]},
    "dropout": {"choices": [0.0, 0.1]},
    "batch_size": {"choices": [4, 8]},
}
FULL_RUNS = 12


def _write_task(args: argparse.Namespace, work: Path) -> tuple[Path, Path, int]:
    data = json.loads(CLINC.read_text(encoding="utf-8"))
    intents = sorted({intent for _, intent in data["train"]})[: args.intents]

    def rows(split: str, per_intent: int) -> list[dict[str, str]]:
        kept: dict[str, int] = {}
        out = []
        for text, intent in data[split]:
            if intent in intents and kept.get(intent, 0) < per_intent:
                kept[intent] = kept.get(intent, 0) + 1
                out.append({"text": text, "label": intent})
        return out

    train, val = rows("train", args.train_per_intent), rows("val", args.val_per_intent)
    for name, split in (("train", train), ("val", val)):
        (work / f"{name}.jsonl").write_text(
            "".join(json.dumps(row) + "\n" for row in split), encoding="utf-8"
        )
    return work / "train.jsonl", work / "val.jsonl", len(train)


def _examples_trained(study: Any) -> int:
    """Training examples the study's finished trials ran: steps x examples per step, from each run."""
    total = 0
    for trial in study.get_trials(deepcopy=False):
        if "train" not in trial.user_attrs or "run_id" not in trial.user_attrs:
            continue
        run_dir = Path(trial.user_attrs["train"]["out"])
        if (run_dir / "run.json").is_file():
            steps = json.loads((run_dir / "run.json").read_text())["steps"]
            total += steps * trial.user_attrs["train"].get("batch_size", 8)
    return total


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from tunesmith.config import default_database_url
    from tunesmith.config.tune import TuneSpec
    from tunesmith.registry.store import Registry
    from tunesmith.tune import run_study
    from tunesmith.tune.report import write_report
    from tunesmith.tune.storage import load_study, open_storage
    from tunesmith.tune.study import base_section
    from tunesmith.tune.study import work as run_trials
    from tunesmith.tune.trial import trial_setup

    train, val, num_train = _write_task(args, work)
    model = args.model
    if args.tiny:
        from tests.conftest import build_tiny_model  # the test suite's tiny model, on this task's text

        texts = [
            json.loads(line)["text"] + " " + json.loads(line)["label"]
            for line in train.read_text().splitlines()
        ]
        model = str(build_tiny_model(work / "tiny-model", texts))
    steps_per_epoch_at_8 = max(1, num_train // 8)
    base = {"model": model, "data": str(train), "val_data": str(val), "epochs": args.epochs, "batch_size": 8,
            "eval_every": max(1, steps_per_epoch_at_8 // 2), "save_every": 10_000,
            "early_stopping_patience": None, "seed": 42}  # fmt: skip
    full_run_examples = args.epochs * num_train

    started = time.perf_counter()
    grid_spec = TuneSpec(train=base, search=SPACE, sampler="grid", pruner="none", trials=64, study="grid",
                         out=work / "grid")  # fmt: skip
    grid = run_study(grid_spec, progress=True)
    grid_seconds = time.perf_counter() - started

    started = time.perf_counter()
    tune_spec = TuneSpec(train=base, search=SPACE, sampler="tpe", pruner="median", trials=64, study="tpe",
                         out=work / "tpe", seed=42)  # fmt: skip
    registry = Registry(default_database_url()).connect()
    study = load_study(tune_spec, "tpe", open_storage(None, work / "tpe"), worker=0)
    setup = trial_setup(tune_spec, "tpe", work / "tpe", base_section(tune_spec))
    while _examples_trained(study) < FULL_RUNS * full_run_examples:
        run_trials(
            study, setup, registry, trials=len(study.trials) + 1, deadline=None, after_trial=lambda: None
        )
    tune_report = write_report(study, work / "tpe", "val_loss")
    tune_seconds = time.perf_counter() - started
    tune_best = study.best_value
    states = [trial.state.name.lower() for trial in study.trials]
    assert grid.best_value is not None
    return {
        "task": f"clinc150, {args.intents} intents, {num_train} train / {args.val_per_intent * args.intents} val",
        "model": "tiny random llama (2 layers, hidden 64)" if args.tiny else args.model,
        "epochs": args.epochs,
        "grid": {
            "runs": grid.trials["complete"],
            "best_val_loss": round(grid.best_value, 5),
            "best_params": grid.best_params,
            "seconds": round(grid_seconds, 1),
            "full_run_equivalents": round(
                _examples_trained(load_study(grid_spec, "grid", open_storage(None, work / "grid"), 0))
                / full_run_examples,
                2,
            ),
        },  # fmt: skip
        "tune": {
            "runs": len(states),
            "pruned": states.count("pruned"),
            "best_val_loss": round(tune_best, 5),
            "best_params": study.best_params,
            "seconds": round(tune_seconds, 1),
            "full_run_equivalents": round(_examples_trained(study) / full_run_examples, 2),
            "importance": tune_report.importance,
        },  # fmt: skip
        "gap": round((tune_best - grid.best_value) / grid.best_value, 5),
        "within_1_percent": tune_best <= grid.best_value * 1.01,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer random model built here (smoke run)")
    parser.add_argument("--intents", type=int, default=10)
    parser.add_argument("--train-per-intent", type=int, default=20)
    parser.add_argument("--val-per-intent", type=int, default=5)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tune-vs-grid-") as directory:
        os.environ.setdefault("TUNESMITH_HOME", str(Path(directory) / "home"))
        result = run(args, Path(directory))
    result |= {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "load_average": os.getloadavg()}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
