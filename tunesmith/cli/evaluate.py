"""`tunesmith eval`: a fine-tuned run (or a base model) against the base model's zero- and few-shot
baselines on a held-out file, with intervals, paired tests and an optional LLM judge."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
import yaml
from rich.table import Table

from tunesmith.cli.common import UsageError, console, err_console, print_json
from tunesmith.cli.options import EVAL_FLAGS, spec_flags
from tunesmith.config import ConfigError, EvalSpec, build_spec, load_config_file

if TYPE_CHECKING:
    from tunesmith.data.records import PreferenceExample
    from tunesmith.eval.evaluate import Candidate
    from tunesmith.registry.store import Registry


@spec_flags(EvalSpec, EVAL_FLAGS)
def evaluate(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        help="A run (folder or id): scored against its base model's baselines. "
        "Or a base model (catalog name, hub id, directory): its baselines alone.",
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML file with an `eval:` section."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report folder (default: <run>/eval, else ./eval)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print report.json to stdout."),
    report_to: str | None = typer.Option(
        None, "--report-to", help="Copy the report into experiment trackers: mlflow, tensorboard, wandb."
    ),
    *,
    flags: dict[str, Any],
) -> None:
    """Score a fine-tune against the base model zero-shot and few-shot, on the same held-out examples.

    Classification data (text/label) is scored by label log-likelihood (accuracy, macro P/R/F1,
    per-class table, confusion matrix); other data is generated greedily, or with beam search
    (`--num-beams 4 --length-penalty 1.0`) or sampling (`--sample`), and scored (ROUGE-1/2/L, BLEU, chrF,
    exact match; `--metric meteor` / `cider` with the `meteor` extra; QA and `####` numeric modes).
    Every metric gets a 95% bootstrap interval; every later model is compared with every earlier one
    (paired difference, interval, p-value, verdict). Writes report.json, report.md, report.html and
    predictions.jsonl, and records the evaluation in the registry.
    """
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry
    from tunesmith.train.trackers import parse_trackers

    trackers = parse_trackers(report_to or "")
    spec = build_spec(EvalSpec, load_config_file(config).eval if config else None, flags)
    registry = Registry(default_database_url()).connect()
    run = maybe_run(model, registry)
    pairs = preference_pairs(spec)
    if pairs is not None:  # preference data: the adapter's preferences against its reference
        if run is None:
            raise UsageError("preference pairs score a run's adapter against its reference: give --model RUN")
        out_dir = out or run["run_dir"] / "eval"
        report = _evaluate_preferences(run, pairs, spec.data, out_dir, json_output)
        registry.record_evaluation(run["run_id"], report, out_dir)
        _report_to(out_dir, trackers)
        return
    base = run["base_model"] if run else model
    candidates = []
    if run is None or spec.baselines:
        candidates = baseline_pair(spec, spec.train_data or (run["train_data"] if run else None))
    if run is not None:
        candidates.append(run["candidate"])
    out_dir = out or (run["run_dir"] / "eval" if run else Path("eval"))
    report = run_evaluation(
        spec, base, candidates, out_dir, spec.train_data or (run["train_data"] if run else None)
    )
    registry.record_evaluation(run["run_id"] if run else None, report, out_dir)
    print_report(report, out_dir, f"evaluation on {spec.data.name}", json_output)
    _report_to(out_dir, trackers)


def _report_to(out_dir: Path, trackers: list[str]) -> None:
    from tunesmith.train.trackers import report_evaluation

    for tracker, where in report_evaluation(out_dir, trackers).items():
        err_console.print(f"reported to {tracker}: {where}", highlight=False)


def preference_pairs(spec: EvalSpec) -> list[PreferenceExample] | None:
    """The evaluation data's preference pairs (a prepared folder's test split), or None for other data."""
    from tunesmith.data.ingest import is_prepared_dataset, load_records
    from tunesmith.data.records import PreferenceExample

    path = spec.data / "test.jsonl" if is_prepared_dataset(spec.data) else spec.data
    records = load_records(path, spec.format)
    pairs = [record for record in records if isinstance(record, PreferenceExample)]
    return pairs[: spec.limit] if len(pairs) == len(records) else None


def _evaluate_preferences(
    run: dict[str, Any], pairs: list[PreferenceExample], data: Path, out: Path, json_output: bool
) -> dict[str, Any]:
    import json

    from tunesmith.data.records import pairs_hash
    from tunesmith.eval.preference import evaluate_preferences

    config = run["config"]
    if run["candidate"].adapter_dir is None:
        raise UsageError(
            f"run {run['run_id']} trained every weight; preference evaluation scores a LoRA adapter"
        )
    init = config.get("init_adapter")
    report = evaluate_preferences(
        run["base_model"], run["candidate"].adapter_dir, pairs, beta=config.get("beta", 0.1),
        reference_adapter=Path(init) if init else None, max_seq_len=config.get("max_seq_len", 1024),
    )  # fmt: skip
    report["data"] = {"path": str(data), "hash": pairs_hash(pairs), "examples": len(pairs)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "preference_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if json_output:
        print_json(report)
        return report
    table = Table(
        title=f"{run['run_id']} on {len(pairs)} preference pairs (reference: {report['reference']})"
    )
    table.add_column("metric")
    table.add_column("value [95% interval]", justify="right")
    for name, metric in report["metrics"].items():
        table.add_row(name, f"{metric['value']:.4f} [{metric['ci_low']:.4f}, {metric['ci_high']:.4f}]")
    console.print(table)
    console.print(f"report: {out / 'preference_report.json'}")
    return report


def print_report(report: dict[str, Any], out: Path, title: str, json_output: bool) -> None:
    """report.json on stdout, or the table and where the report files are."""
    if json_output:
        print_json(report)
        return
    print_report_table(report, title=f"{title} ({report['data']['examples']} examples)")
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'}")


def baseline_pair(spec: EvalSpec, train_data: Path | None) -> list[Candidate]:
    """Zero-shot always; few-shot when there is training data to draw demonstrations from."""
    from tunesmith.eval.evaluate import Candidate, baseline_candidates

    if train_data is None:
        err_console.print("note: no training data (--train-data), so no few-shot baseline")
        return [Candidate("base zero-shot", shots=0)]
    return baseline_candidates(spec.shots)


def run_evaluation(
    spec: EvalSpec, base: str, candidates: list[Candidate], out: Path, train_data: Path | None
) -> dict[str, Any]:
    """Evaluate, then judge when the spec asks for it."""
    from tunesmith.eval.evaluate import evaluate_generation, load_eval_examples
    from tunesmith.eval.generate import Decoding

    decoding = Decoding(
        num_beams=spec.num_beams, length_penalty=spec.length_penalty, no_repeat_ngram_size=spec.no_repeat_ngram_size,
        repetition_penalty=spec.repetition_penalty, do_sample=spec.do_sample, temperature=spec.temperature,
        top_p=spec.top_p, seed=spec.seed,
    )  # fmt: skip
    report = evaluate_generation(
        base, candidates, spec.data, out, data_format=spec.format, train_data=train_data, task=spec.task,
        metrics=spec.metrics, max_new_tokens=spec.max_new_tokens, decoding=decoding,
        out_of_scope_label=spec.out_of_scope_label, calibration_data=spec.calibration_data,
        out_of_scope_objective=spec.out_of_scope_objective,
        batch_size=spec.batch_size, limit=spec.limit, samples=spec.bootstrap_samples,
    )  # fmt: skip
    if spec.judge is None:
        return report
    from tunesmith.eval.judge import judge_evaluation, make_judge

    examples = load_eval_examples(spec.data, spec.format, "test")[0][: spec.limit]
    questions = [example.prompt_messages()[-1]["content"] for example in examples]
    return judge_evaluation(
        make_judge(spec.judge.model, spec.judge.base_url, spec.judge.api_key_env), out, questions, spec.judge.criteria, pairwise=spec.judge.pairwise,
        limit=spec.judge.limit,
    )  # fmt: skip


def maybe_run(model: str, registry: Registry) -> dict[str, Any] | None:
    """What `model` names when it is a finished run: its id, folder, base, training data and candidate."""
    import json

    from tunesmith.eval.evaluate import Candidate

    try:
        run_dir = registry.find_run_dir(model)
    except ConfigError:
        return None
    if not (run_dir / "run.json").is_file():
        raise typer.BadParameter(
            f"run {model} has not finished (no run.json); resume it first", param_hint="--model"
        )
    summary = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))["train"]
    artifact = Path(summary["artifact_dir"])
    run_id = summary["run_id"]
    if summary["method"] != "full":  # lora, qlora: an adapter
        candidate = Candidate(run_id, adapter_dir=artifact)
    else:
        candidate = Candidate(run_id, model=str(artifact))
    return {"run_id": run_id, "run_dir": run_dir, "base_model": summary["base_model"],
            "train_data": Path(config["data"]), "candidate": candidate, "config": config}  # fmt: skip


def print_report_table(report: dict[str, Any], title: str) -> None:
    """Metrics as rows, models as columns (value and 95% interval, the best in bold); then the verdicts."""
    from tunesmith.eval.records import EvalReport, format_interval, format_number

    typed = EvalReport.model_validate(report)
    models = typed.models
    table = Table(title=title)
    table.add_column("metric")
    for entry in models:
        table.add_column(entry.name, justify="right")
    for name in typed.metric_names:
        best = max(m.metrics[name].value for m in models)
        cells = []
        for entry in models:
            metric = entry.metrics[name]
            text = format_interval(metric.value, metric.ci_low, metric.ci_high)
            cells.append(f"[bold]{text}[/]" if metric.value == best and len(models) > 1 else text)
        table.add_row(name, *cells)
    table.add_row("decoding", *[f"[dim]{entry.decoding or typed.settings.decoding}[/]" for entry in models])
    console.print(table)
    if not typed.comparisons:
        return
    verdicts = Table(title="paired comparisons (95% bootstrap interval, approximate-randomization p)")
    for column in ("model", "vs", "metric", "difference", "p", "verdict"):
        verdicts.add_column(column)
    colors = {"better": "green", "worse": "red"}
    for row in typed.comparisons:
        color = colors.get(row.verdict, "white")
        verdicts.add_row(
            row.model, row.reference, row.metric,
            format_interval(row.difference, row.ci_low, row.ci_high, signed=True), format_number(row.p_value),
            f"[{color}]{row.verdict}[/]",
        )  # fmt: skip
    console.print(verdicts)
