"""Data preparation speed and memory: `prepare_data` end to end on synthetic chats.

One command:  .venv/bin/python benchmarks/data_prepare.py [--rows 100000] [--path stream] [--json-out FILE]

Generates `--rows` dirty synthetic chats of about 200 tokens (benchmarks/synthetic_chat.py: duplicates,
near-duplicates, personal data, HTML, mojibake, boilerplate, leak candidates) in a child process, then
prepares them in this one with every step on (near-dedup and leakage check included, calibration off),
and prints rows/s, seconds per step and peak RSS of the preparing process. Target: 100k rows < 60 s on
a 2-core laptop CPU; 1 million rows ≤ 2 GB peak RSS and ≥ 3,000 rows/s. `--path stream` (what
`prepare_data` runs) streams rows through disk, `--path memory` runs the in-memory reference steps. The load average is printed too: on a shared machine, figures are slower.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tunesmith.config import PrepareSpec
from tunesmith.data.prepare import prepare_data_in_memory
from tunesmith.data.prepare_stream import prepare_data_streaming

PATHS = {"memory": prepare_data_in_memory, "stream": prepare_data_streaming}


def _mark(marks: list[tuple[str, float]], step: str) -> None:
    """Time each step once (row-count updates within a step are not new steps)."""
    name = step.split(":")[0].rsplit(" ", 1)[0] if ":" in step else step
    if not marks or marks[-1][0] != name:
        marks.append((name, time.perf_counter()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--path", choices=sorted(PATHS), default="stream", help="which preparation runs")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chat.jsonl"
        generator = Path(__file__).with_name("synthetic_chat.py")
        subprocess.run(
            [sys.executable, str(generator), "--rows", str(args.rows), "--out", str(data)], check=True
        )
        marks: list[tuple[str, float]] = []
        spec = PrepareSpec(inputs=[data], out=Path(tmp) / "prepared", calibrate=False)
        started = time.perf_counter()
        result = PATHS[args.path](spec, progress=lambda step: _mark(marks, step))
        seconds = time.perf_counter() - started
    ends = [at for _, at in marks[1:]] + [started + seconds]
    figures = {
        "rows": args.rows,
        "path": args.path,
        "seconds": round(seconds, 2),
        "rows_per_second": round(args.rows / seconds),
        # CPU seconds of this process: on a shared machine, wall time overstates what an idle 2-core needs.
        "cpu_seconds": round(sum(resource.getrusage(resource.RUSAGE_SELF)[:2]), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "steps_seconds": {step: round(end - at, 2) for (step, at), end in zip(marks, ends, strict=True)},
        "rows_out": result.splits,
        "removed": {s["name"]: s["rows_in"] - s["rows_out"] for s in result.report["steps"]},
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(figures, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
