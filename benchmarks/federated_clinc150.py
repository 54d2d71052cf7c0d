"""Federated vs pooled vs local-only fine-tuning on CLINC150 split among data owners with skewed labels.

One command:  .venv/bin/python benchmarks/federated_clinc150.py [--json-out FILE]
Small run:    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/federated_clinc150.py --intents 20 \\
                  --train-per-intent 30 --test-per-intent 10 --rounds 4 --local-steps 4 [--server-lr 1,4]

The issue's goal, on the embedded SmolLM2-135M-Instruct:
1. CLINC150's in-scope training utterances (`../shared/datasets/clinc150/data_full.json`) as `text`/`label`
   rows, split among `--clients` owners (10) by a seeded Dirichlet(alpha) label skew (`--alpha` 0.1: most
   owners see few intents), as `tunesmith federated simulate` partitions them.
2. Federated: `--rounds` rounds of `--local-steps` steps on a `--fraction` of the owners (0.5: 5 of 10),
   exact aggregation, with Flower's simulation, recorded in a throwaway registry; one job per
   `--server-lr` value (1: FedAvg's step; default the federated spec's, as `--lr` is). LoRA r 4 on q_proj, v_proj (the federated default). Traffic per
   round is read from the round summaries (float16 tensors, both ways, all sampled owners).
3. Pooled: one adapter trained on all the rows with the same total steps: the sum of every client's local
   steps in the (first) federated job (rounds x local steps x owners per round), same batch size and lr.
4. Local-only: each owner trains alone for an equal share of those steps (total / owners: what an owner
   trained in the federation, on average).
5. All adapters are scored on the same test set (label log-likelihood, the first `--test-per-intent` test
   utterances of each intent). Reported: each one's accuracy with a 95% bootstrap interval; federated /
   pooled (goal >= 0.95) and federated minus pooled per test example (paired bootstrap interval); federated
   minus the average owner's local-only accuracy, per test example, with a paired bootstrap interval (goal:
   excludes zero); traffic per round (goal <= 5 MB).

The machine is shared: the load average is printed with the figures. Results, dated, with commands and
machines: benchmarks/RESULTS.md ("Federated CLINC150").
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLINC = REPO.parent / "shared" / "datasets" / "clinc150" / "data_full.json"


def _rows(pairs: list[list[str]], intents: list[str], per_intent: int | None) -> list[dict[str, str]]:
    """`text`/`label` rows of the chosen intents, the first `per_intent` of each (None: all)."""
    taken: dict[str, int] = {}
    rows = []
    for text, intent in pairs:
        if intent in intents and (per_intent is None or taken.get(intent, 0) < per_intent):
            taken[intent] = taken.get(intent, 0) + 1
            rows.append({"text": text, "label": intent})
    return rows


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _train(model: str, data: Path, steps: int, out: Path, args: argparse.Namespace) -> Path:
    from tunesmith.config import LoraSpec, TrainSpec
    from tunesmith.train.sft import train_sft

    spec = TrainSpec(
        model=model, data=data, max_steps=steps, hold_out_val=False, batch_size=args.batch_size, lr=args.lr,
        max_seq_len=256, lora=LoraSpec(r=args.rank, alpha=2 * args.rank, dropout=0.0, target_modules=_targets(args)),
        warmup_ratio=0.0,
        early_stopping_patience=None, out=out, seed=args.seed,
    )  # fmt: skip
    result = train_sft(spec, progress=False)
    assert result.artifact_dir is not None
    return Path(result.artifact_dir)


def _targets(args: argparse.Namespace) -> list[str] | str:
    return "all-linear" if args.targets == "all-linear" else args.targets.split(",")


def _correct(predictions: Path) -> dict[str, np.ndarray]:
    """Per model, 1.0 where its prediction on a test example was right."""
    by_model: dict[str, list[float]] = {}
    for line in predictions.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        by_model.setdefault(item["model"], []).append(float(item["prediction"] == item["reference"]))
    return {name: np.asarray(values) for name, values in by_model.items()}


def _interval(values: np.ndarray, samples: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean with a 95% bootstrap interval (resampling test examples)."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    return {"value": round(float(values.mean()), 4), "ci_low": round(float(np.percentile(means, 2.5)), 4),
            "ci_high": round(float(np.percentile(means, 97.5)), 4)}  # fmt: skip


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from tunesmith.config import FederatedSpec, default_database_url
    from tunesmith.data.ingest import load_examples
    from tunesmith.eval.evaluate import Candidate, evaluate_models
    from tunesmith.federated.partition import partition_rows, write_partitions
    from tunesmith.federated.simulate import simulate
    from tunesmith.registry.store import Registry

    os.environ["TUNESMITH_HOME"] = str(work / "home")  # a throwaway registry for the rounds
    data = json.loads(CLINC.read_text(encoding="utf-8"))
    intents = sorted({intent for _, intent in data["train"]})[: args.intents]
    rows = _rows(data["train"], intents, args.train_per_intent)
    pooled = _write(work / "pooled.jsonl", rows)
    test = _write(work / "test.jsonl", _rows(data["test"], intents, args.test_per_intent))
    shares = partition_rows(rows, args.clients, "dirichlet", "label", args.alpha, args.seed)
    owners = write_partitions(rows, shares, work / "owners")
    timings: dict[str, float] = {}

    federated = {}
    for server_lr in args.server_lr:
        started = time.perf_counter()
        spec = FederatedSpec(
            model=args.model, client_data=owners, rounds=args.rounds, local_steps=args.local_steps,
            fraction=args.fraction, aggregation=args.aggregation, server_lr=server_lr,
            batch_size=args.batch_size, lr=args.lr, max_seq_len=256, seed=args.seed,
            lora={"r": args.rank, "alpha": 2 * args.rank, "dropout": 0.0, "target_modules": _targets(args)},
            out=work / f"federated-{server_lr:g}", name=f"clinc-fed-{server_lr:g}",
        )  # fmt: skip
        federated[f"federated-{server_lr:g}"] = simulate(spec, Registry(default_database_url()).connect())
        timings[f"federated_{server_lr:g}_s"] = round(time.perf_counter() - started, 1)

    # The same total steps: pooled runs as many steps as all clients together (same batch size), and each
    # owner alone runs an equal share of them (what an owner trained in the federation, on average).
    first = next(iter(federated.values()))
    total_steps = sum(report.steps for summary in first.rounds for report in summary.clients)
    local_only_steps = max(1, round(total_steps / args.clients))
    started = time.perf_counter()
    pooled_adapter = _train(args.model, pooled, total_steps, work / "pooled-run", args)
    timings["pooled_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    local = [
        _train(args.model, owner, local_only_steps, work / f"local-{number}", args)
        for number, owner in enumerate(owners)
    ]
    timings["local_s"] = round(time.perf_counter() - started, 1)

    started = time.perf_counter()
    candidates = [Candidate(name, Path(result.final_adapter_dir)) for name, result in federated.items()]
    candidates.append(Candidate("pooled", pooled_adapter))
    candidates += [Candidate(f"local-{number}", path) for number, path in enumerate(local)]
    evaluate_models(
        args.model, candidates, load_examples(test), work / "eval", train_examples=load_examples(pooled),
        batch_size=args.eval_batch_size, show_progress=not args.quiet,
    )  # fmt: skip
    timings["evaluation_s"] = round(time.perf_counter() - started, 1)

    correct = _correct(work / "eval" / "predictions.jsonl")
    local_mean = np.mean([correct[f"local-{number}"] for number in range(args.clients)], axis=0)
    return {
        "task": {
            "intents": len(intents),
            "train_rows": len(rows),
            "test_rows": len(correct["pooled"]),
            "clients": args.clients,
            "alpha": args.alpha,
            "rows_per_client": [len(share) for share in shares],
            "intents_per_client": [len({rows[i]["label"] for i in share}) for share in shares],
        },  # fmt: skip
        "training": {
            "rounds": args.rounds,
            "local_steps": args.local_steps,
            "fraction": args.fraction,
            "clients_per_round": len(first.rounds[0].clients),
            "pooled_steps": total_steps,
            "local_only_steps": local_only_steps,
            "aggregation": args.aggregation,
            "targets": args.targets,
            "rank": args.rank,
            "batch_size": args.batch_size,
            "lr": args.lr,
            **timings,
        },  # fmt: skip
        "accuracy": {
            **{name: _interval(correct[name]) for name in federated},
            "pooled": _interval(correct["pooled"]),
            "local_only_average": _interval(local_mean),
            "local_only_each": [round(float(correct[f"local-{n}"].mean()), 4) for n in range(args.clients)],
        },
        "federated_over_pooled": {
            name: round(float(correct[name].mean() / max(correct["pooled"].mean(), 1e-9)), 4)
            for name in federated
        },
        "federated_minus_pooled": {name: _interval(correct[name] - correct["pooled"]) for name in federated},
        "federated_minus_local_average": {name: _interval(correct[name] - local_mean) for name in federated},
        "rounds": {
            name: [
                {
                    "round": s.round,
                    "train_loss": round(s.train_loss, 4),
                    "error": s.error,
                    "fedavg_error": s.fedavg_error,
                    "traffic_mb": round(s.traffic_bytes / 1e6, 3),
                }
                for s in result.rounds
            ]
            for name, result in federated.items()
        },  # fmt: skip
        "traffic_per_round_mb": round(max(s.traffic_bytes for s in first.rounds) / 1e6, 3),  # both ways
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": [round(value, 2) for value in os.getloadavg()],
        },  # fmt: skip
    }


def main() -> None:
    from tunesmith.config import FederatedSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument(
        "--alpha", type=float, default=0.1, help="Dirichlet label skew (smaller: more skewed)"
    )
    parser.add_argument("--intents", type=int, default=150, help="the first N intents, alphabetically")
    parser.add_argument("--train-per-intent", type=int, default=None, help="default: all (100)")
    parser.add_argument("--test-per-intent", type=int, default=None, help="default: all (30)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--fraction", type=float, default=0.5, help="share of the owners sampled each round")
    parser.add_argument(
        "--server-lr",
        type=lambda text: [float(value) for value in text.split(",")],
        default=[FederatedSpec.model_fields["server_lr"].default],
        help="server learning rate(s), comma-separated: one federated job each, scored side by side "
        "(default: the federated spec's)",
    )
    parser.add_argument("--aggregation", choices=["exact", "fedavg"], default="exact")
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument(
        "--targets", default="q_proj,v_proj", help="adapted modules, e.g. all-linear (more: more traffic)"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--lr",
        type=float,
        default=FederatedSpec.model_fields["lr"].default,
        help="every adapter's peak learning rate (default: the federated spec's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-batch-size", type=int, default=16)
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for data, runs and report (default: temp)"
    )
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    if not CLINC.is_file():
        raise SystemExit(f"{CLINC} not found: the shared datasets folder is needed")
    work = args.work or Path(tempfile.mkdtemp(prefix="federated-clinc150-"))
    work.mkdir(parents=True, exist_ok=True)
    figures = run(args, work)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
