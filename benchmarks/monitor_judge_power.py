"""The monitor's judge-score alert: its false-alarm rate and its power, simulated; no model, no registry.

One command:  .venv/bin/python benchmarks/monitor_judge_power.py [--trials 500]

Each trial draws two windows of judge scores, each answer's score from a fixed spread of 1-5 scores
(mean 3.9, the shape a judge gives answers that are mostly fine), and in the current window turns a
share of the answers into 1s (answers gone bad: 0% is the A/A case). It runs the shipped test
(`tunesmith.monitor.quality.compare_judge_scores`: one-sided permutation test, alert at p < 0.01) at
the default sample of 50 answers per window and at 200, and prints the share of trials that alert.
The judge is not simulated: its own noise and bias come on top. Deterministic for a seed; a few
minutes on one core. See benchmarks/RESULTS.md, "Monitor judge score".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunesmith.monitor.quality import compare_judge_scores

SCORES = np.array([5, 4, 4, 3, 5, 4, 2, 5, 4, 3], dtype=float)  # the healthy answers' score spread


def _window(scores: np.ndarray) -> dict[str, Any]:
    return {"scores": scores.tolist(), "mean": float(scores.mean()), "ci_low": 0.0, "ci_high": 0.0,
            "sampled": len(scores), "of": len(scores)}  # fmt: skip


def alert_rate(sample: int, bad_share: float, trials: int, seed: int) -> float:
    """Share of `trials` simulated window pairs on which the test alerts."""
    rng = np.random.default_rng(seed)
    alerts = 0
    for trial in range(trials):
        previous, current = rng.choice(SCORES, sample), rng.choice(SCORES, sample)
        current[rng.random(sample) < bad_share] = 1.0
        alerts += bool(compare_judge_scores(_window(current), _window(previous), seed=trial))
    return alerts / trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [
        {
            "sample": sample,
            "bad_share": bad_share,
            "alert_rate": alert_rate(sample, bad_share, args.trials, args.seed),
        }
        for sample in (50, 200)
        for bad_share in (0.0, 0.1, 0.2, 0.3)
    ]
    print(json.dumps({"trials": args.trials, "seed": args.seed, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
