"""Each project template's defaults, measured: `tunesmith init` + `tunesmith run` on its sample data.

One command:  .venv/bin/python benchmarks/templates.py [--template NAME ...] [--json]
Public data:  .venv/bin/python benchmarks/templates.py --public clinc150|sharegpt [--size N] [--json]

For each template (all seven by default, in catalog order) it makes a project in a temporary folder with
`init_project` (what `tunesmith init DIR --template NAME` calls), runs the whole pipeline with
`run_project` (what `tunesmith run` calls: prepare, baseline, train, eval, gate, register, deploy) on the
embedded SmolLM2-135M-Instruct, and reads the evaluation report the run wrote: zero-shot, few-shot and
fine-tuned figures with their 95% bootstrap intervals, the paired differences of the fine-tune against
each baseline with their p-values, whether the gate passed, and the wall and CPU time of the run and of
each stage. A gate that fails is a figure, not an error: the table says so.

`--data FILE` replaces the template's sample (`data/examples.jsonl`) with FILE, in the template's form,
so the template's defaults run on other data. `--public clinc150` runs intent-routing on 10 of
CLINC150's intents (evenly spread over its domains, `--size` training utterances each); `--public
sharegpt` runs support-replies on the first `--size` ShareGPT conversations; both read
`../shared/datasets` and copy nothing into the repository.
Everything happens under a temporary TUNESMITH_HOME (its registry included) whose `models/` points at
`.cache/test-models`, so the model's one-time conversion is shared with the test suite.

One thread (`OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`): the machine is shared, so wall times
depend on its load (printed with the figures). Results, dated, with the machine:
benchmarks/RESULTS.md ("Project templates") and each template's README ("Measured").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
FINE_TUNED = "fine-tuned"
# The public datasets a template's defaults run on (`--public NAME`), and the template each fits.
PUBLIC = {"clinc150": "intent-routing", "sharegpt": "support-replies"}
# The instruction a public dataset's rows get in place of the template's, which names the sample's
# made-up business (a user edits `prepare.instruction` the same way for their own data).
PUBLIC_INSTRUCTION = {"clinc150": "Which intent does this message express? Answer with the intent name only."}


def clinc150_rows(intents: int, per_intent: int) -> list[dict[str, str]]:
    """CLINC150 training utterances as `text`/`label` rows: `intents` intents spread evenly over the 150
    (so over its 10 domains), the first `per_intent` of each. Out-of-scope rows are left out."""
    pairs = json.loads((DATASETS / "clinc150" / "data_full.json").read_text(encoding="utf-8"))["train"]
    every = sorted({intent for _, intent in pairs})
    chosen = set(every[:: max(1, len(every) // intents)][:intents])
    taken: dict[str, int] = {}
    rows = []
    for text, intent in pairs:
        if intent in chosen and taken.get(intent, 0) < per_intent:
            taken[intent] = taken.get(intent, 0) + 1
            rows.append({"text": text, "label": intent})
    return rows


def sharegpt_rows(count: int) -> list[dict[str, Any]]:
    """The first `count` ShareGPT conversations (`from: human/gpt`) as chat examples: every reply learnt."""
    roles = {"human": "user", "gpt": "assistant"}
    conversations = json.loads((DATASETS / "sharegpt-identity" / "dummy_conversation.json").read_text())
    return [
        {
            "messages": [
                {"role": roles[turn["from"]], "content": turn["value"]} for turn in item["conversations"]
            ]
        }
        for item in conversations[:count]
    ]


def write_public(name: str, size: int, out: Path) -> Path:
    """A subset of public dataset `name` (`size`: conversations, or utterances per intent of 10 intents)."""
    rows: list[Any] = clinc150_rows(10, size) if name == "clinc150" else sharegpt_rows(size)
    out.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return out


def _cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure_template(
    name: str, workdir: Path, data: Path | None, models: Path, instruction: str | None = None
) -> dict[str, Any]:
    """Init and run one template's project in `workdir` (on `data`, with `instruction` in place of the
    template's `prepare.instruction` when given); its figures, gate verdict and times."""
    from tunesmith.project.cache import read_cache
    from tunesmith.project.pipeline import StageFailed, run_project
    from tunesmith.project.spec import Stage, load_project
    from tunesmith.project.templates import init_project

    home = workdir / "home"
    home.mkdir(parents=True)
    (home / "models").symlink_to(models, target_is_directory=True)
    os.environ["TUNESMITH_HOME"] = str(home)
    root = workdir / name
    init_project(root, name)
    if data is not None:
        shutil.copyfile(data, root / "data" / "examples.jsonl")
    if instruction is not None:
        _set_instruction(root / "tunesmith.yaml", instruction)
    load = os.getloadavg()[0]
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    failure = None
    try:
        run_project(root, show_progress=False, on_event=_say)
    except StageFailed as error:
        failure = f"{error.stage}: {error.__cause__}"
    wall, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
    cache = read_cache(load_project(root).state_dir)
    seconds = {str(stage): record.seconds for stage, record in cache.stages.items()}
    result: dict[str, Any] = {"template": name, "data": data.name if data else "sample", "failure": failure,
                              "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                              "stage_seconds": seconds, "load_average_at_start": round(load, 2)}  # fmt: skip
    if Stage.eval in cache.stages:
        report_path = root / cache.stages[Stage.eval].outputs["path"] / "report.json"
        result.update(_figures(json.loads(report_path.read_text(encoding="utf-8"))))
        train = cache.stages[Stage.train]
        result["train"] = train.summary
    result["gate_passed"] = failure is None and Stage.gate in cache.stages
    return result


def _set_instruction(project_file: Path, instruction: str) -> None:
    """Replace the `instruction:` line of a project file's `prepare:` section, keeping its comments."""
    lines = project_file.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.lstrip().startswith("instruction:"))
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    lines[at] = f"{indent}instruction: {json.dumps(instruction)}\n"
    project_file.write_text("".join(lines), encoding="utf-8")


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """Each model's metrics with intervals, and the fine-tune's paired comparisons against the baselines."""
    models = {
        model["name"]: {
            metric: [m["value"], m["ci_low"], m["ci_high"]] for metric, m in model["metrics"].items()
        }
        for model in report["models"]
    }
    comparisons = [
        {
            key: row[key]
            for key in ("reference", "metric", "difference", "ci_low", "ci_high", "p_value", "verdict")
        }
        for row in report["comparisons"]
        if row["model"] == FINE_TUNED
    ]
    return {"examples": report["data"]["examples"], "models": models, "comparisons": comparisons}


def _say(event: Any) -> None:
    took = f" ({event.seconds:.0f}s)" if event.seconds is not None else ""
    print(f"  {event.stage} {event.state}{took}: {'; '.join(event.lines)}", file=sys.stderr, flush=True)


def _table(results: list[dict[str, Any]]) -> str:
    lines = []
    for result in results:
        verdict = "gate passed" if result["gate_passed"] else f"gate FAILED ({result['failure']})"
        lines.append(
            f"\n{result['template']} ({result['data']}, {result.get('examples', '?')} test examples): "
            f"{verdict}; wall {result['wall_seconds']:.0f}s, CPU {result['cpu_seconds']:.0f}s, "
            f"stages {result['stage_seconds']}"
        )
        for model, metrics in result.get("models", {}).items():
            cells = "  ".join(f"{k} {v:.3f} [{lo:.3f}, {hi:.3f}]" for k, (v, lo, hi) in metrics.items())
            lines.append(f"  {model:<16} {cells}")
        for row in result.get("comparisons", []):
            lines.append(
                f"  vs {row['reference']:<14} {row['metric']:<9} {row['difference']:+.3f} "
                f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] p {row['p_value']:.3f} {row['verdict']}"
            )
    return "\n".join(lines)


def main() -> None:
    import torch

    from tunesmith.project.templates import list_templates

    names = [template.name for template in list_templates()]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", action="append", choices=names, help="Only this template (repeatable).")
    parser.add_argument("--data", type=Path, help="Replace the sample data with this file (one template).")
    parser.add_argument(
        "--public",
        choices=sorted(PUBLIC),
        help="Run the template this public dataset fits on a subset of it (../shared/datasets).",
    )
    parser.add_argument(
        "--size",
        type=int,
        default=30,
        help="--public subset: utterances per intent (10 intents) or conversations.",
    )
    parser.add_argument("--models", type=Path, default=REPO / ".cache" / "test-models",
                        help="Converted models folder to reuse (default: .cache/test-models).")  # fmt: skip
    parser.add_argument("--keep", type=Path, help="Keep the projects here instead of a temporary folder.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    chosen = [PUBLIC[args.public]] if args.public else args.template or names
    if args.data is not None and len(chosen) != 1:
        parser.error("--data replaces one template's sample: name it with --template")
    torch.set_num_threads(1)
    args.models.mkdir(parents=True, exist_ok=True)
    results = []
    for name in chosen:
        print(f"{name}:", file=sys.stderr, flush=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"tmpl-{name}-", dir=args.keep))
        try:
            data = args.data.resolve() if args.data else None
            if args.public:
                data = write_public(args.public, args.size, workdir / f"{args.public}.jsonl")
            instruction = PUBLIC_INSTRUCTION.get(args.public or "")
            results.append(measure_template(name, workdir, data, args.models.resolve(), instruction))
        finally:
            if args.keep is None:
                shutil.rmtree(workdir, ignore_errors=True)
    machine = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": 1}
    if args.json:
        print(json.dumps({"machine": machine, "results": results}, indent=2))
    else:
        print(f"machine: {machine}{_table(results)}")


if __name__ == "__main__":
    main()
