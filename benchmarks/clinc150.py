"""CLINC150 at tunesmith's defaults within a training time budget: in-scope accuracy and out-of-scope recall.

One command:  .venv/bin/python benchmarks/clinc150.py [--time-budget 30m] [--json-out FILE]
Smoke run:    .venv/bin/python benchmarks/clinc150.py --intents 5 --train-per-intent 20 --val-per-intent 4 \\
                  --oos-val 10 --test-per-intent 6 --oos-test 10 --time-budget 60s

What it does, with the library a user's `tunesmith train` and `tunesmith eval` run:
1. Writes CLINC150's in-scope training utterances (`../shared/datasets/clinc150/data_full.json`, the
   "full" variant: 150 intents x 100) as `text`/`label` rows. The out-of-scope training rows are left out:
   this is the paper's "oos-threshold" setting, where the model never sees an out-of-scope example.
2. Trains with every default but the time budget: a LoRA adapter on the embedded SmolLM2-135M-Instruct,
   validated on the split `tunesmith train` holds out of the training data by default, stopping at the
   budget (or earlier, by early stopping) with the best checkpoint.
3. Calibrates the out-of-scope threshold on CLINC150's validation split (in-scope `val` plus `oos_val`),
   by default as the paper does (the threshold with the best accuracy, out of scope counted as a 151st
   intent; `--oos-objective balanced` for tunesmith eval's default), and scores the `test` split plus
   `oos_test` by label log-likelihood: in-scope accuracy and out-of-scope recall, each with a 95%
   bootstrap interval, and the training wall time.
The reference figure is the fine-tuned BERT of Larson et al. (2019), "An Evaluation Dataset for Intent
Classification and Out-of-Scope Prediction", Table 2, oos-threshold on the full split: in-scope accuracy
96.2%, out-of-scope recall 52.3% (with oos-train, 96.9% and 40.3%).

The flags shrink the task for a quick look (`--intents`, `--*-per-intent`, `--oos-*`); `--lr`,
`--batch-size` and `--seed` override a default, for the runs that choose the defaults. The machine is
shared: the load average is printed with the figures. Results, dated, with their commands and machines:
benchmarks/RESULTS.md ("CLINC150").
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
OUT_OF_SCOPE = "oos"


def _rows(pairs: list[list[str]], intents: list[str], per_intent: int | None) -> list[dict[str, str]]:
    """`text`/`label` rows of the chosen intents, the first `per_intent` of each (None: all)."""
    taken: dict[str, int] = {}
    rows = []
    for text, intent in pairs:
        if intent in intents and (per_intent is None or taken.get(intent, 0) < per_intent):
            taken[intent] = taken.get(intent, 0) + 1
            rows.append({"text": text, "label": intent})
    return rows


def _out_of_scope(pairs: list[list[str]], count: int | None) -> list[dict[str, str]]:
    return [{"text": text, "label": OUT_OF_SCOPE} for text, _ in pairs[:count]]


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _learning_rate(spec: Any) -> float:
    """The learning rate the run trained at: the default depends on the model's size."""
    from tunesmith.models.loading import resolve_model
    from tunesmith.train.plan import model_shape

    shape = model_shape(resolve_model(spec.model), spec.tuning, spec.lora.r, spec.lora.target_modules)
    return float(spec.resolved_lr(shape.parameters))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from tunesmith.config import TrainSpec, duration_seconds
    from tunesmith.data.ingest import load_examples
    from tunesmith.eval.evaluate import Candidate, OutOfScope, baseline_candidates, evaluate_models
    from tunesmith.train.sft import train_sft

    data = json.loads(CLINC.read_text(encoding="utf-8"))
    intents = sorted({intent for _, intent in data["train"]})[: args.intents]
    train = _write(work / "train.jsonl", _rows(data["train"], intents, args.train_per_intent))
    calibration = _rows(data["val"], intents, args.val_per_intent) + _out_of_scope(
        data["oos_val"], args.oos_val
    )
    test = _rows(data["test"], intents, args.test_per_intent) + _out_of_scope(data["oos_test"], args.oos_test)

    overrides = {
        name: value
        for name, value in (("lr", args.lr), ("batch_size", args.batch_size), ("seed", args.seed))
        if value is not None
    }
    spec = TrainSpec(
        model=args.model,
        data=train,
        time_budget=duration_seconds(args.time_budget),
        out=work / "run",
        **overrides,  # type: ignore[arg-type]
    )
    trained = work / "training.json"
    if args.reuse_training and trained.is_file():
        training = json.loads(trained.read_text(encoding="utf-8"))
    else:
        started = time.perf_counter()
        result = train_sft(spec, progress=not args.quiet)
        assert result.artifact_dir is not None
        training = {
            "settings": {"lr": _learning_rate(spec), "batch_size": spec.batch_size, "seed": spec.seed},
            "time_budget_s": spec.time_budget,
            "loop_seconds": result.wall_seconds,
            "wall_seconds_with_loading": round(time.perf_counter() - started, 1),
            "steps": result.steps,
            "best_step": result.best_step,
            "epochs": round(result.steps * spec.batch_size / result.num_examples, 2),
            "train_examples": result.num_examples,
            "validation_examples": result.num_val_examples,
            "trained_tokens": result.trained_tokens,
            "tokens_per_second": result.tokens_per_second,
            "val_loss": result.val_loss,
            "run_dir": result.run_dir,
            "adapter": str(result.artifact_dir),
            "load_average_after": [round(value, 2) for value in os.getloadavg()],
        }
        trained.write_text(json.dumps(training, indent=2) + "\n", encoding="utf-8")

    candidates = [Candidate("fine-tuned", Path(training["adapter"]))]
    if args.baselines:
        candidates = [*baseline_candidates(5), *candidates]
    started = time.perf_counter()
    report = evaluate_models(
        args.model, candidates, load_examples(_write(work / "test.jsonl", test)), work / "eval",
        train_examples=load_examples(train),
        out_of_scope=OutOfScope(
            OUT_OF_SCOPE, load_examples(_write(work / "calibration.jsonl", calibration)), args.oos_objective
        ),
        batch_size=args.eval_batch_size, show_progress=not args.quiet,
    )  # fmt: skip
    eval_wall = time.perf_counter() - started
    models = {
        entry["name"]: {
            name: entry["metrics"][name]
            for name in ("in_scope_accuracy", "out_of_scope_recall", "accuracy", "macro_f1")
        }
        | {"out_of_scope_threshold": entry["out_of_scope_threshold"]}
        for entry in report["models"]
    }
    return {
        "task": {
            "intents": len(intents),
            "train_examples": training["train_examples"],
            "validation_examples": training["validation_examples"],
            "calibration_examples": len(calibration),
            "test_in_scope": len(test) - sum(row["label"] == OUT_OF_SCOPE for row in test),
            "test_out_of_scope": sum(row["label"] == OUT_OF_SCOPE for row in test),
        },
        "training": training,
        "evaluation": {
            "seconds": round(eval_wall, 1),
            "out_of_scope_objective": args.oos_objective,
            "report": str(work / "eval" / "report.json"),
        },
        "models": models,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": [round(value, 2) for value in os.getloadavg()],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-budget", default="30m", help="training budget (30m, 90s, ...)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--intents", type=int, default=150, help="the first N intents, alphabetically")
    parser.add_argument("--train-per-intent", type=int, default=None, help="default: all (100)")
    parser.add_argument("--val-per-intent", type=int, default=None, help="calibration; default: all (20)")
    parser.add_argument("--oos-val", type=int, default=None, help="default: all (100)")
    parser.add_argument("--test-per-intent", type=int, default=None, help="default: all (30)")
    parser.add_argument("--oos-test", type=int, default=None, help="default: all (1000)")
    parser.add_argument("--lr", type=float, default=None, help="override the default learning rate")
    parser.add_argument("--batch-size", type=int, default=None, help="override the default batch size")
    parser.add_argument("--seed", type=int, default=None, help="override the default seed")
    parser.add_argument(
        "--oos-objective",
        choices=["accuracy", "balanced"],
        default="accuracy",
        help="what the out-of-scope threshold maximises on the validation split: accuracy with out of scope "
        "as one more label (the paper's rule, the default here) or the mean of in-scope accuracy and "
        "out-of-scope recall (tunesmith eval's default)",
    )
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument("--baselines", action="store_true", help="also score the base model zero- and 5-shot")
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for data, run and report (default: temp)"
    )
    parser.add_argument(
        "--reuse-training",
        action="store_true",
        help="evaluate the adapter an earlier run left in --work (its training.json) instead of training",
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if not CLINC.is_file():
        raise SystemExit(f"{CLINC} not found: the shared datasets folder is needed")
    work = args.work or Path(tempfile.mkdtemp(prefix="clinc150-"))
    work.mkdir(parents=True, exist_ok=True)
    figures = run(args, work)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
