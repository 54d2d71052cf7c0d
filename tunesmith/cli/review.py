"""`tunesmith review`: human review tasks (create, list, show, results, export, close).

Reviewers judge in the web console (`tunesmith ui`) with their keys (`tunesmith keys create --name alice
--role reviewer --tenant acme`); these commands are the admin's side, acting with the local registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tunesmith.cli.common import UsageError, console, err_console, print_json
from tunesmith.config import DEFAULT_MODEL
from tunesmith.review.records import ReviewKind

app = typer.Typer(help="Human review: blind pairwise, rubric, model-vs-human and data review tasks.")

_Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_Task = Annotated[int, typer.Argument(help="Task id (see `tunesmith review list`).", show_default=False)]


def _open() -> Any:
    """The review store on the local registry, and the local admin caller the CLI acts as."""
    from tunesmith.config import default_database_url
    from tunesmith.registry.serving_records import Caller
    from tunesmith.registry.store import Registry
    from tunesmith.review.store import ReviewStore

    return ReviewStore(Registry(default_database_url()).connect()), Caller(tenant=None, is_admin=True)


def _fmt(interval: Any) -> str:
    return f"{interval.value:.3f} [{interval.ci_low:.3f}, {interval.ci_high:.3f}]"


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@app.command("create")
def create(
    name: Annotated[
        str, typer.Argument(help="A name reviewers see, e.g. 'taglines v2 vs v1'.", show_default=False)
    ],
    kind: Annotated[ReviewKind, typer.Option("--kind", "-k", help="What reviewers do with each item.")],
    evaluation: Annotated[
        Path | None,
        typer.Option(
            "--evaluation",
            "-e",
            help="An evaluation folder (`tunesmith eval --out`): its models' answers on the same prompts.",
        ),
    ] = None,
    deployment: Annotated[
        str | None,
        typer.Option(
            "--deployment", "-d", help="A seeded sample of what this deployment served (rubric or pairwise)."
        ),
    ] = None,
    dataset: Annotated[
        Path | None,
        typer.Option(
            "--dataset",
            help="A prepared chat dataset (its folder or registry id) whose rows to approve, reject or edit "
            "(--kind data).",
        ),
    ] = None,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated models of the evaluation "
            "(default: all; model_vs_human: the last, the candidate).",
        ),
    ] = None,
    examples: Annotated[
        int | None,
        typer.Option("--examples", help="Evenly spaced evaluation examples (default: all).", min=1),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option(
            "--sample", help="Requests or dataset rows to sample (default: 50 requests, every row).", min=1
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the sample.")] = 0,
    rubric: Annotated[
        Path | None,
        typer.Option(
            "--rubric",
            help="Rubric YAML (`criteria:` name -> question, "
            "optional `levels:`); default: the project's eval.review_rubric.",
        ),
    ] = None,
    project: Annotated[
        Path,
        typer.Option(
            "--project", help="Project folder whose rubric a rubric task uses when --rubric is not given."
        ),
    ] = Path("."),
    reviewers: Annotated[
        int, typer.Option("--reviewers", help="Reviewers per item (2+ gives agreement).", min=1)
    ] = 2,
    tenant: Annotated[
        str | None,
        typer.Option(
            "--tenant",
            "-t",
            help="Tenant whose reviewers see the task (default: the deployment's; none otherwise).",
        ),
    ] = None,
    json_output: _Json = False,
) -> None:
    """Create a review task from one source.

    Examples:
      tunesmith review create "v2 vs base" --kind pairwise --evaluation .tunesmith/eval --examples 50
      tunesmith review create "voice" --kind rubric --evaluation .tunesmith/eval --models acme@2 --rubric rubric.yaml
      tunesmith review create "human?" --kind model_vs_human --evaluation .tunesmith/eval
      tunesmith review create "served" --kind rubric --deployment support --sample 40 --project .
      tunesmith review create "rows" --kind data --dataset data/prepared --sample 100 --reviewers 1
    """  # fmt: skip
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.review.rubric import load_rubric, project_rubric
    from tunesmith.review.sources import collect_items

    store, admin = _open()
    items, source = collect_items(
        ServingStore(store.registry), admin, kind, evaluation=evaluation, deployment=deployment, dataset=dataset,
        models=models.split(",") if models else None, examples=examples, sample=sample, seed=seed,
    )  # fmt: skip
    spec = None
    if kind is ReviewKind.rubric:
        spec = load_rubric(rubric) if rubric is not None else project_rubric(project)
    elif rubric is not None:
        raise UsageError("--rubric is for --kind rubric")
    task = store.create(admin, name, kind, items, source=source, rubric=spec, reviewers_per_item=reviewers,
                        tenant=tenant or source.get("tenant"))  # fmt: skip
    if json_output:
        print_json(task.to_dict())
        return
    console.print(f"review task [bold]{task.id}[/] {task.name}: {task.items} {kind} items, models {task.models}, "
                  f"{reviewers} reviewer(s) each, tenant {task.tenant or '-'}")  # fmt: skip


@app.command("list")
def list_tasks(json_output: _Json = False) -> None:
    """Every review task, newest first."""
    store, admin = _open()
    tasks = store.list_tasks(admin)
    if json_output:
        print_json([task.to_dict() for task in tasks])
        return
    table = Table(title="Review tasks")
    for column in ("id", "name", "kind", "tenant", "status", "items", "models", "created"):
        table.add_column(column)
    for t in tasks:
        table.add_row(str(t.id), t.name, t.kind, t.tenant or "-", t.status, str(t.items), ", ".join(t.models),
                      t.created_at.isoformat()[:19])  # fmt: skip
    console.print(table)


@app.command("show")
def show(task_id: _Task, json_output: _Json = False) -> None:
    """A task and its progress per reviewer."""
    store, admin = _open()
    task, progress = store.get(task_id, admin), store.progress(task_id, admin)
    if json_output:
        print_json({"task": task.to_dict(), "progress": progress.to_dict()})
        return
    console.print(f"[bold]{task.name}[/] ({task.kind}, {task.status}), tenant {task.tenant or '-'}, "
                  f"models {', '.join(task.models)}, source {task.source}")  # fmt: skip
    console.print(f"{progress.judged}/{progress.needed} judgements, {progress.complete_items}/{progress.items} "
                  "items complete")  # fmt: skip
    table = Table(title="Reviewers")
    for column in ("reviewer", "name", "judged", "minutes"):
        table.add_column(column)
    for reviewer in progress.reviewers:
        table.add_row(
            reviewer.reviewer, reviewer.name or "-", str(reviewer.judged), f"{reviewer.seconds / 60:.1f}"
        )
    console.print(table)


@app.command("results")
def results(
    task_id: _Task,
    samples: Annotated[
        int, typer.Option("--samples", help="Bootstrap resamples for the intervals.", min=10)
    ] = 1000,
    json_output: _Json = False,
) -> None:
    """Win rates and Bradley-Terry strengths, rubric means (95% intervals over items), agreement,
    disagreements."""
    store, admin = _open()
    found = store.results(task_id, admin, samples=samples)
    if json_output:
        print_json(found.to_dict())
        return
    console.print(f"[bold]{found.task.name}[/] ({found.task.kind}): {found.judgements} judgements")
    if found.win_rates:
        table = Table(title="Preferences (ties and both-bad count half)")
        for column in ("model", "win rate [95% CI]", "Bradley-Terry strength [95% CI]"):
            table.add_column(column)
        for model, rate in sorted(found.win_rates.items(), key=lambda kv: -found.strengths[kv[0]].value):
            table.add_row(model, _fmt(rate), _fmt(found.strengths[model]))
        console.print(table)
    if found.model_vs_human is not None:
        console.print(
            f"model preferred or indistinguishable from the human reference: {_fmt(found.model_vs_human)}"
        )
    if found.rubric_means:
        criteria = list(next(iter(found.rubric_means.values())))
        table = Table(title="Rubric means, 1-5 [95% CI]")
        for column in ("model", *criteria):
            table.add_column(column)
        for model, means in found.rubric_means.items():
            table.add_row(model, *(_fmt(means[c]) for c in criteria))
        console.print(table)
    if found.decisions:
        console.print("data review: " + ", ".join(f"{k} {v}" for k, v in sorted(found.decisions.items())))
    _print_agreement(found)


def _print_agreement(found: Any) -> None:
    table = Table(title="Agreement between reviewers")
    for column in ("target", "items", "reviewers", "Cohen's κ", "Fleiss' κ", "Krippendorff's α"):
        table.add_column(column)
    for row in found.agreement:
        alpha = ", ".join(f"{level} {_value(value)}" for level, value in row.krippendorff_alpha.items())
        table.add_row(row.target, str(row.items), str(row.reviewers), _value(row.cohen_kappa),
                      _value(row.fleiss_kappa), alpha)  # fmt: skip
    console.print(table)
    if found.disagreements:
        table = Table(title=f"Disagreements ({len(found.disagreements)})")
        for column in ("item", "target", "prompt", "what each reviewer said"):
            table.add_column(column)
        for d in found.disagreements:
            said = "; ".join(f"{who}: {value}" for who, value in d.values.items())
            table.add_row(str(d.item_id), d.target, d.prompt[:60], said)
        console.print(table)


@app.command("export")
def export(
    task_id: _Task,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Folder for the datasets: dpo/, kto/, sft/ as there are rows.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="Target model: its tokenizer counts tokens.")
    ] = DEFAULT_MODEL,
    good_rating: Annotated[
        int,
        typer.Option("--good-rating", help="Mean rubric scores at or above this are good (KTO label true)."),
    ] = 4,
    bad_rating: Annotated[
        int, typer.Option("--bad-rating", help="Mean rubric scores at or below this are bad.")
    ] = 2,
    pii: Annotated[
        str, typer.Option("--pii", help="Personal data: report, redact or drop (as data prepare).")
    ] = "redact",
    json_output: _Json = False,
) -> None:
    """Export a task's judgements as versioned datasets, as `data from-feedback` writes them.

    Pairwise: DPO pairs (the majority's choice). Rubric: KTO rows, and SFT rows plus DPO pairs from edits.
    Data review: the next version of the dataset (rejected rows dropped, edits applied). Every dataset is
    recorded in the registry with the task in its lineage.

    Examples:
      tunesmith review export 3 --out data/review-3
      tunesmith train --method dpo --data data/review-3/dpo --init-adapter RUN_ID --name acme
    """  # fmt: skip
    from tunesmith.review.export import export_review

    store, admin = _open()
    with err_console.status("preparing"):
        made, unused = export_review(store, task_id, admin, out, model=model, pii=pii, good_rating=good_rating,
                                     bad_rating=bad_rating)  # fmt: skip
    summary = {"datasets": {kind: {"out": str(r.out), "hash": r.hash, "splits": r.splits} for kind, r in made.items()},
               "unused": unused}  # fmt: skip
    if json_output:
        print_json(summary)
        return
    for kind, result in made.items():
        console.print(f"[bold]{kind}[/] {result.out}: {result.splits} (hash {result.hash[:12]})")
    for line in unused:
        err_console.print(f"[yellow]unused:[/] {line}", highlight=False)


@app.command("close")
def close(task_id: _Task, json_output: _Json = False) -> None:
    """Stop judging on a task (results and export stay)."""
    store, admin = _open()
    task = store.close(task_id, admin)
    if json_output:
        print_json(task.to_dict())
        return
    console.print(f"closed review task {task.id} ({task.name})")
