"""Data preparation speed and memory: `prepare_data` end to end on synthetic chats, per `num_proc`.

One command:
    .venv/bin/python benchmarks/data_prepare.py [--rows 100000] [--num-proc 1 2] [--path stream] [--json-out FILE]

Generates `--rows` dirty synthetic chats of about 200 tokens (benchmarks/synthetic_chat.py: duplicates,
near-duplicates, personal data, HTML, mojibake, boilerplate, leak candidates) in a child process, then
prepares them once per `--num-proc` value, each in a fresh child process, with every step on
(near-dedup and leakage check included, calibration off), and prints per run: rows/s, CPU seconds of the
whole process tree (the preparing process and its workers: load-independent, unlike wall time), seconds
per step, and the tree's peak memory, sampled twice a second (RSS summed over the processes, which
counts pages the forked workers share with their parent once per process, and PSS, which splits them).
Target: 1 million rows ≤ 2 GB peak and ≥ 3,000 rows/s. `--path memory` runs the in-memory reference
steps instead (one process). The load average is printed too: on a shared machine, wall time is slower.
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
from typing import Any

import psutil

_STEP_WORDS = 3  # a progress message's first words name its step ("cleaning, finding personal ...")


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _tree_memory(process: psutil.Process) -> tuple[int, int]:
    """RSS and PSS (bytes) summed over a process and its descendants."""
    rss = pss = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            info = member.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        rss, pss = rss + info.rss, pss + info.pss
    return rss, pss


def _run(data: Path, out: Path, num_proc: int, path: str) -> dict[str, Any]:
    """Prepare `data` in a child process; its figures, with the tree's CPU time and peak memory."""
    figures_file = out.with_suffix(".json")
    command = [sys.executable, __file__, "--prepare", str(data), "--out", str(out)]
    command += ["--num-proc", str(num_proc), "--path", path, "--json-out", str(figures_file)]
    cpu_before, started = _cpu_of_children(), time.perf_counter()
    child = subprocess.Popen(command)
    process = psutil.Process(child.pid)
    peak_rss = peak_pss = 0
    while child.poll() is None:
        rss, pss = _tree_memory(process)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.5)
    if child.returncode:
        raise SystemExit(f"the num_proc={num_proc} run failed ({child.returncode})")
    figures: dict[str, Any] = json.loads(figures_file.read_text(encoding="utf-8"))
    cpu = _cpu_of_children() - cpu_before
    figures.update(
        process_seconds=round(time.perf_counter() - started, 2),
        cpu_seconds_tree=round(cpu, 2),
        cpu_ms_per_row=round(1000 * cpu / figures["rows"], 3),
        peak_rss_tree_mb=round(peak_rss / 2**20),
        peak_pss_tree_mb=round(peak_pss / 2**20),
        load_average_after=os.getloadavg(),
    )
    return figures


def _prepare(data: Path, out: Path, num_proc: int, path: str) -> dict[str, Any]:
    """The child's side: one preparation, timed per step."""
    from tunesmith.config import PrepareSpec
    from tunesmith.data.prepare import prepare_data_in_memory
    from tunesmith.data.prepare_stream import prepare_data_streaming

    marks: list[tuple[str, float]] = []

    def mark(step: str) -> None:
        name = " ".join(step.split(":")[0].split()[:_STEP_WORDS])
        if not marks or marks[-1][0] != name:
            marks.append((name, time.perf_counter()))

    with data.open("rb") as handle:
        rows = sum(1 for _ in handle)
    spec = PrepareSpec(inputs=[data], out=out, calibrate=False, num_proc=num_proc)
    prepare = prepare_data_streaming if path == "stream" else prepare_data_in_memory
    started = time.perf_counter()
    result = prepare(spec, progress=mark)
    seconds = time.perf_counter() - started
    ends = [at for _, at in marks[1:]] + [started + seconds]
    return {
        "rows": rows,
        "path": path,
        "num_proc": num_proc,
        "seconds": round(seconds, 2),
        "rows_per_second": round(rows / seconds),
        "steps_seconds": {step: round(end - at, 2) for (step, at), end in zip(marks, ends, strict=True)},
        "rows_out": result.splits,
        "hash": result.hash,
        "removed": {s["name"]: s["rows_in"] - s["rows_out"] for s in result.report["steps"]},
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--num-proc", type=int, nargs="+", default=[1, 2], help="one run per value")
    parser.add_argument("--path", choices=("stream", "memory"), default="stream", help="which steps run")
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)  # the child's side: this data
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        figures = _prepare(args.prepare, args.out, args.num_proc[0], args.path)
        args.json_out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chat.jsonl"
        generator = Path(__file__).with_name("synthetic_chat.py")
        subprocess.run(
            [sys.executable, str(generator), "--rows", str(args.rows), "--out", str(data)], check=True
        )
        for num_proc in args.num_proc:
            runs.append(_run(data, Path(tmp) / f"prepared-{num_proc}", num_proc, args.path))
            print(json.dumps(runs[-1], indent=2), flush=True)
    if len({run["hash"] for run in runs}) > 1:
        raise SystemExit("the runs wrote different datasets")
    if args.json_out:
        args.json_out.write_text(json.dumps(runs, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
