"""The A/B test's error rate and speed under peeking: simulated experiments, no model, no registry.

One command:  .venv/bin/python benchmarks/ab_simulation.py [--experiments 10000] [--peek 50]

Each experiment sends events (a 0/1 outcome each) to two arms at random, half each, and looks at the
test after every `--peek` events, up to `--horizon` events. Two settings, 10,000 experiments each:
- A/A, both arms at 60%: the share of experiments the test ever calls a difference (false positives);
- A/B, 60% against 65% (a 5-point lift): the share it calls (power) and the median number of events at
  which it does, against the fixed-horizon sample of a two-sided z-test at alpha 0.05 with 80% power
  (1,468 per arm, 2,936 events).
Tests: the shipped normal-mixture mSPRT (`tunesmith.monitor.sequential`, alpha 0.05) at several mixture
spreads tau (the shipped one is `tunesmith.monitor.ab.MIXTURE_SD`); for reference, a plain z-test
read at every look (what peeking at a dashboard does), and a point-alternative SPRT on +-5 points with
a futility bound at likelihood ratio 0.2 (Wald's design, which needs the lift fixed in advance; not
shipped). Deterministic for a seed; about a minute on one core. See benchmarks/RESULTS.md, "A/B tests".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunesmith.monitor.sequential import _difference, fixed_horizon_sample_size, msprt_log_ratio

ALPHA = 0.05
Decide = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # -> 1 call, -1 futile, 0


def msprt(tau: float) -> Decide:
    def decide(sa: np.ndarray, na: np.ndarray, sb: np.ndarray, nb: np.ndarray) -> np.ndarray:
        return (msprt_log_ratio(sa, na, sb, nb, tau) >= np.log(1 / ALPHA)).astype(int)

    return decide


def peeked_z(sa: np.ndarray, na: np.ndarray, sb: np.ndarray, nb: np.ndarray) -> np.ndarray:
    difference, variance = _difference(sa, na, sb, nb)
    return (np.abs(difference) / np.sqrt(variance) >= NormalDist().inv_cdf(1 - ALPHA / 2)).astype(int)


def sprt(lift: float, futility: float) -> Decide:
    def decide(sa: np.ndarray, na: np.ndarray, sb: np.ndarray, nb: np.ndarray) -> np.ndarray:
        difference, variance = _difference(sa, na, sb, nb)
        up = (lift * difference - lift**2 / 2) / variance
        down = (-lift * difference - lift**2 / 2) / variance
        called = np.logaddexp(up, down) - np.log(2) >= np.log(1 / ALPHA)
        futile = np.maximum(up, down) <= np.log(futility)
        return np.where(called, 1, np.where(futile, -1, 0))

    return decide


def one_sided_sprt(lift: float) -> Decide:
    """Wald's SPRT of "B is better by exactly `lift`" against "no difference", with all of alpha on that
    one side: the lower bound on the stopping sample for a test at this alpha (Wald-Wolfowitz optimality)."""

    def decide(sa: np.ndarray, na: np.ndarray, sb: np.ndarray, nb: np.ndarray) -> np.ndarray:
        difference, variance = _difference(sa, na, sb, nb)
        return ((lift * difference - lift**2 / 2) / variance >= np.log(1 / ALPHA)).astype(int)

    return decide


def simulate(
    decide: Decide, rate_a: float, rate_b: float, experiments: int, peek: int, horizon: int, seed: int
) -> dict[str, float]:
    """Share called, share stopped as futile, and the median events at stopping (inf: not stopped)."""
    rng = np.random.default_rng(seed)
    sa, na, sb, nb = (np.zeros(experiments) for _ in range(4))
    outcome = np.zeros(experiments, dtype=int)
    stopped_at = np.full(experiments, np.inf)
    for look in range(1, horizon // peek + 1):
        to_b = rng.binomial(peek, 0.5, experiments)
        na += peek - to_b
        nb += to_b
        sa += rng.binomial(peek - to_b, rate_a)
        sb += rng.binomial(to_b, rate_b)
        running = outcome == 0
        decision = decide(sa, na, sb, nb)
        newly = running & (decision != 0)
        outcome[newly] = decision[newly]
        stopped_at[newly] = look * peek
    return {
        "called": float((outcome == 1).mean()),
        "futile": float((outcome == -1).mean()),
        "median_stop": float(np.median(stopped_at)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=10_000)
    parser.add_argument("--peek", type=int, default=50, help="events between looks")
    parser.add_argument("--horizon", type=int, default=12_000, help="events per experiment at most")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    fixed = 2 * fixed_horizon_sample_size(0.60, 0.05, ALPHA, 0.8)
    tests: dict[str, Decide] = {f"msprt tau={tau}": msprt(tau) for tau in (0.03, 0.05, 0.08)}
    tests["z-test peeked (reference)"] = peeked_z
    tests["sprt +-5pt futility 0.2 (reference)"] = sprt(0.05, 0.2)
    tests["sprt +5pt one-sided (reference: the bound)"] = one_sided_sprt(0.05)
    rows = []
    for name, decide in tests.items():
        null = simulate(decide, 0.60, 0.60, args.experiments, args.peek, args.horizon, args.seed)
        lift = simulate(decide, 0.60, 0.65, args.experiments, args.peek, args.horizon, args.seed + 1)
        row = {
            "test": name,
            "aa_false_positive_rate": null["called"],
            "ab_power": lift["called"],
            "ab_futile": lift["futile"],
            "ab_median_stop": lift["median_stop"],
            "ab_median_stop_over_fixed": lift["median_stop"] / fixed,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"fixed_horizon_events": fixed, "experiments": args.experiments, "peek": args.peek,
                      "horizon": args.horizon}))  # fmt: skip


if __name__ == "__main__":
    main()
