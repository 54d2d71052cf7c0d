"""`tunesmith audit`: the hash-chained audit trail of state-changing actions, and bias audits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from tunesmith.cli.common import UsageError, console, err_console, print_json
from tunesmith.cli.options import BIAS_AUDIT_FLAGS, spec_flags
from tunesmith.config import BiasAuditSpec, build_spec, load_config_file

if TYPE_CHECKING:
    from tunesmith.audit.bias import AuditTarget
    from tunesmith.registry.store import Registry

app = typer.Typer(
    help="The audit trail (who changed what, when; hash-chained, tamper-evident) and bias audits."
)


@app.command("log")
def audit_log(
    since: Annotated[
        str | None, typer.Option("--since", help="Only records this recent, e.g. 7d or 12h (default: all).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every record, oldest first: id, time, actor, action, target, before and after."""
    from tunesmith.audit.trail import read_log
    from tunesmith.config import default_database_url, duration_seconds
    from tunesmith.registry.store import Registry

    try:
        age = None if since is None else float(duration_seconds(since))
    except ValueError as error:
        raise UsageError(f"--since {error}") from error
    records = read_log(Registry(default_database_url()).connect(), age)
    if json_output:
        print_json(records)
        return
    for r in records:
        change = json.dumps({"before": r["before"], "after": r["after"]}, sort_keys=True)
        console.print(f"{r['id']:>5} {r['created_at'][:19]} {r['actor']} {r['action']} {r['target']} {change}",
                      markup=False, highlight=False)  # fmt: skip


@app.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 naming the first record that was edited or deleted."""
    from tunesmith.audit.trail import verify_registry
    from tunesmith.config import default_database_url
    from tunesmith.registry.store import Registry

    result = verify_registry(Registry(default_database_url()).connect())
    if result.bad_id is not None:
        console.print(f"audit trail broken at record {result.bad_id}: {result.reason}", markup=False)
        raise typer.Exit(1)
    console.print(f"audit trail intact: {result.records} records")


@app.command("bias")
@spec_flags(BiasAuditSpec, BIAS_AUDIT_FLAGS)
def audit_bias(
    target: str = typer.Argument(
        ...,
        help="What to audit: a run (id or folder), an adapter from the registry (name or name@version), or a "
        "base model (catalog name, hub id, directory).",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file with a `bias_audit:` section."
    ),
    gate: bool = typer.Option(
        False, "--gate", help="Exit 1 when a gated flip rate's upper 95% bound exceeds --threshold."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Report folder (default: <run>/bias_audit, else ./bias_audit)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print bias_report.json to stdout."),
    *,
    flags: dict[str, Any],
) -> None:
    """Counterfactual bias audit: rewrite each test prompt with names, pronouns, ages, nationalities ...
    swapped to each other group and check whether the answers change.

    Classification: the label flip rate. Generation: refusal and sentiment flips, and the change in
    length, sentiment, the task metric and (with --judge-model) a rubric score. Each with a 95% bootstrap
    interval per attribute and per group pair, for the audited model and the base model, with the paired
    difference (did fine-tuning make it worse?). Also the task metric per group (--group-column) and how
    often the training data mentions each group. Writes bias_report.json, bias_report.html and
    bias_pairs.jsonl, and records the audit in the registry beside the run's evaluations.
    """
    from tunesmith.audit.bias import BASE_NAME
    from tunesmith.audit.bias import audit_bias as run_audit
    from tunesmith.audit.bias_findings import AuditSettings
    from tunesmith.audit.counterfactual import choose_attributes
    from tunesmith.config import default_database_url
    from tunesmith.eval.evaluate import Candidate
    from tunesmith.registry.store import Registry

    spec = build_spec(BiasAuditSpec, load_config_file(config).bias_audit if config else None, flags)
    chosen = choose_attributes(spec.terms, spec.attributes)
    registry = Registry(default_database_url()).connect()
    audited, run_dir = resolve_target(target, registry)
    if spec.train_data is None and audited.train_data is not None and not audited.train_data.exists():
        err_console.print(f"note: the run's training data {audited.train_data} is gone: no representation report "
                          "(give --train-data)", highlight=False)  # fmt: skip
        audited = replace(audited, train_data=None)
    out_dir = out or (run_dir / "bias_audit" if run_dir else Path("bias_audit"))
    settings = AuditSettings(
        threshold=spec.threshold, gate_measures=tuple(spec.gate_measures), max_new_tokens=spec.max_new_tokens,
        batch_size=spec.batch_size, samples=spec.bootstrap_samples, seed=spec.seed,
    )  # fmt: skip
    judge = None
    if spec.judge is not None:
        from tunesmith.eval.judge import make_judge

        judge = (
            make_judge(spec.judge.model, spec.judge.base_url, spec.judge.api_key_env),
            spec.judge.criteria,
        )
    reference = Candidate(BASE_NAME) if spec.baseline and audited.candidate.name != BASE_NAME else None
    report = run_audit(
        audited, spec.data, out_dir, chosen, settings, data_format=spec.format, reference=reference,
        train_data=spec.train_data, group_column=spec.group_column, limit=spec.limit, judge=judge,
    )  # fmt: skip
    registry.record_evaluation(audited.run_id, report, out_dir)
    if json_output:
        print_json(report)
    else:
        print_bias_report(report, out_dir)
    if gate and not report["gate"]["passed"]:
        raise typer.Exit(1)


def resolve_target(target: str, registry: Registry) -> tuple[AuditTarget, Path | None]:
    """A run, else a registered adapter (`name` or `name@version`), else a base model; and the run folder."""
    from tunesmith.audit.bias import BASE_NAME, AuditTarget
    from tunesmith.cli.evaluate import maybe_run
    from tunesmith.eval.evaluate import Candidate
    from tunesmith.registry.monitor_store import MonitorStore
    from tunesmith.registry.serving_records import Caller
    from tunesmith.registry.serving_store import NotFoundError, ServingStore, parse_model_ref

    run = maybe_run(target, registry)
    if run is not None:
        audited = AuditTarget(
            run["run_id"], run["base_model"], run["candidate"], run["run_id"], run["train_data"]
        )
        return audited, run["run_dir"]
    try:
        adapter = ServingStore(registry).find_adapter(
            Caller(tenant=None, is_admin=True), *parse_model_ref(target)
        )
    except NotFoundError:
        return AuditTarget(target, target, Candidate(BASE_NAME)), None
    run_id = MonitorStore(registry).adapter_run_id(adapter.name, adapter.version)
    trained = maybe_run(run_id, registry) if run_id else None
    candidate = Candidate(adapter.key, adapter_dir=Path(adapter.path))
    train_data = trained["train_data"] if trained else None
    return AuditTarget(adapter.key, adapter.base_model, candidate, run_id, train_data), None


def print_bias_report(report: dict[str, Any], out: Path) -> None:
    """One row per attribute and flip measure: the audited model, the base, the difference; then the gate."""
    from tunesmith.audit.measures import FLIP_MEASURES
    from tunesmith.eval.records import format_interval

    models = [model["name"] for model in report["models"]]
    table = Table(title=f"bias audit of {report['target']['name']} ({report['pairs']} counterfactual pairs)")
    for column in ("attribute", "measure", "pairs", *models, *(["difference, p"] if len(models) > 1 else [])):
        table.add_column(column)
    for name, attribute in report["attributes"].items():
        for measure, per_model in attribute["measures"].items():
            if measure not in FLIP_MEASURES and measure != "task_metric":
                continue
            cells = [format_interval(m["value"], m["ci_low"], m["ci_high"]) for m in per_model.values()]
            row = attribute["comparisons"].get(measure)
            if row is not None:
                text = format_interval(row["difference"], row["ci_low"], row["ci_high"], signed=True)
                cells.append(f"{text}, p={row['p_value']:.3g} ({row['change']})")
            table.add_row(name, measure, str(attribute["pairs"]), *cells)
    console.print(table)
    if report["unmentioned"]:
        err_console.print(f"no test prompt mentions: {', '.join(report['unmentioned'])}")
    gate = report["gate"]
    for line in gate["failures"]:
        console.print(f"[red]{line}[/]", highlight=False)
    verdict = "[green]passed[/]" if gate["passed"] else "[red]failed[/]"
    console.print(f"gate {verdict} (threshold {gate['threshold']:g}); report: {out / 'bias_report.html'}")
