"""Where review items come from: an evaluation's predictions, a deployment's served requests, or a
prepared dataset's rows. No torch.

Owns: building `NewItem`s for each kind of task from each source, with the task's `source` record
(what was read, its hash, the seed), and choosing which examples (evenly spaced through an
evaluation, as the review sheet does; a seeded sample of requests and rows). Does not own: storing
the task (see `store`) or evaluating and serving (the items are outputs already made).
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tunesmith.config import ConfigError
from tunesmith.data.ingest import MANIFEST, is_prepared_dataset, load_split
from tunesmith.data.records import Message, dataset_hash
from tunesmith.data.split import SPLITS
from tunesmith.project.review import spaced_indices
from tunesmith.registry.request_log import NotFoundError
from tunesmith.registry.serving import RequestLogRecord
from tunesmith.registry.serving_records import Caller
from tunesmith.registry.serving_store import ServingStore
from tunesmith.review.records import HUMAN, NewItem, ReviewKind

DATA_MODEL = "data"  # the "model" of a dataset row's answer in a data review

Source = tuple[list[NewItem], dict[str, Any]]  # the items and the task's `source` record


def items_from_evaluation(
    eval_dir: Path, kind: ReviewKind, *, examples: int | None = None, models: list[str] | None = None
) -> Source:
    """Items from an evaluation folder (`predictions.jsonl` and `report.json`).

    pairwise: every pair of `models` (default: all) on each example; rubric: each model's answer on its
    own; model_vs_human: each model's answer (default: the evaluation's last model, the candidate)
    against the reference. `examples` evenly spaced examples (default: all).
    """
    if kind is ReviewKind.data:
        raise ConfigError("a data review samples a prepared dataset: give --dataset DIR, not --evaluation")
    rows = _predictions(eval_dir)
    names = list(dict.fromkeys(row["model"] for per_example in rows.values() for row in per_example))
    default = names[-1:] if kind is ReviewKind.model_vs_human else names
    chosen_models = models or default
    unknown = sorted(set(chosen_models) - set(names))
    if unknown:
        raise ConfigError(f"{eval_dir}: no predictions of {unknown}; the evaluation has {names}")
    if kind is ReviewKind.pairwise and len(chosen_models) < 2:
        raise ConfigError(f"a pairwise review needs two or more models; the evaluation has {names}")
    prompts, digest = _prompts(eval_dir, len(rows))
    indices = sorted(rows)
    if examples is not None:
        indices = [indices[i] for i in spaced_indices(len(indices), examples)]
    items = []
    for index in indices:
        answer = {row["model"]: row["prediction"] for row in rows[index]}
        reference = str(rows[index][0]["reference"])
        for outputs in _outputs(kind, chosen_models, answer, reference):
            items.append(NewItem(prompts[index], reference, outputs, {"example": index}))
    source = {"evaluation": str(eval_dir.resolve()), "data_hash": digest, "examples": indices}
    return items, source


def _outputs(
    kind: ReviewKind, models: list[str], answer: dict[str, str], reference: str
) -> list[list[dict[str, str]]]:
    if kind is ReviewKind.pairwise:
        return [[{"model": a, "text": answer[a]}, {"model": b, "text": answer[b]}]
                for a, b in itertools.combinations(models, 2)]  # fmt: skip
    if kind is ReviewKind.model_vs_human:
        return [[{"model": m, "text": answer[m]}, {"model": HUMAN, "text": reference}] for m in models]
    return [[{"model": m, "text": answer[m]}] for m in models]


def _predictions(eval_dir: Path) -> dict[int, list[dict[str, Any]]]:
    path = eval_dir / "predictions.jsonl"
    if not path.is_file():
        raise ConfigError(
            f"{eval_dir}: not an evaluation folder (no predictions.jsonl); see `tunesmith eval`"
        )
    rows: dict[int, list[dict[str, Any]]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            rows.setdefault(int(row["index"]), []).append(row)
        except (ValueError, KeyError, TypeError) as error:
            raise ConfigError(f"{path}:{number}: not a prediction row ({error})") from error
    return rows


def _prompts(eval_dir: Path, count: int) -> tuple[list[list[Message]], str]:
    """Each example's conversation as the evaluation data has it (predictions hold rendered prompts)."""
    report = json.loads((eval_dir / "report.json").read_text(encoding="utf-8"))
    data = Path(report["data"]["path"])
    try:
        examples, digest = load_split(data, "test")
    except (OSError, ValueError) as error:
        raise ConfigError(f"{eval_dir}: cannot read the evaluation's data {data}: {error}") from error
    digest = digest or dataset_hash(examples)
    if digest != report["data"]["hash"] or len(examples) != count:
        raise ConfigError(f"{eval_dir}: its data {data} changed since the evaluation (hash or size differs)")
    return [example.prompt_messages() for example in examples], digest


def items_from_requests(
    store: ServingStore, caller: Caller, deployment: str, kind: ReviewKind, *, sample: int, seed: int = 0
) -> Source:
    """Items from a seeded sample of `deployment`'s logged requests that kept their text.

    rubric: each sampled answer; pairwise: answers to the same conversation by different variants.
    """
    found = store.find_deployment(caller, deployment)
    if found is None:
        raise NotFoundError(f"no deployment named {deployment}")
    if kind not in (ReviewKind.rubric, ReviewKind.pairwise):
        raise ConfigError(f"served requests make rubric or pairwise reviews, not {kind}")
    with store.registry.session() as session:
        records = session.scalars(
            select(RequestLogRecord)
            .where(RequestLogRecord.deployment == deployment)
            .order_by(RequestLogRecord.id)
        ).all()
        logged = [(r.id, _request_prompt(r.prompt), r.outputs[0], r.variant) for r in records if r.outputs]
    usable = [(rid, prompt, text, variant) for rid, prompt, text, variant in logged if prompt and text]
    if not usable:
        raise ConfigError(
            f"deployment {deployment} has no logged requests with their text (request log mode?)"
        )
    if kind is ReviewKind.rubric:
        picked = random.Random(seed).sample(usable, min(sample, len(usable)))
        items = [NewItem(prompt, None, [{"model": variant, "text": text}], {"request_id": rid})
                 for rid, prompt, text, variant in picked]  # fmt: skip
    else:
        items = _request_pairs(usable, sample, seed)
        if not items:
            raise ConfigError(f"deployment {deployment}: no conversation was answered by two variants")
    source = {"deployment": deployment, "tenant": found["tenant"], "sample": sample, "seed": seed}
    return items, source


def _request_pairs(
    usable: list[tuple[str, list[Message], str, str]], sample: int, seed: int
) -> list[NewItem]:
    by_prompt: dict[str, dict[str, tuple[str, str]]] = {}
    prompts: dict[str, list[Message]] = {}
    for rid, prompt, text, variant in usable:
        key = json.dumps(prompt, sort_keys=True)
        prompts[key] = prompt
        by_prompt.setdefault(key, {}).setdefault(variant, (rid, text))  # the first answer of each variant
    pairs = [
        NewItem(prompts[key], None, [{"model": a, "text": answers[a][1]}, {"model": b, "text": answers[b][1]}],
                {"request_ids": [answers[a][0], answers[b][0]]})
        for key, answers in by_prompt.items()
        for a, b in itertools.combinations(sorted(answers), 2)
    ]  # fmt: skip
    return random.Random(seed).sample(pairs, min(sample, len(pairs)))


def _request_prompt(logged: dict[str, Any]) -> list[Message] | None:
    """The conversation a logged request answered, ending with the user's turn (None otherwise).

    Copied from `data.feedback._prompt`: change both together."""
    messages: list[Message] = (
        [{"role": m["role"], "content": m["content"]} for m in logged["messages"]]
        if "messages" in logged
        else [{"role": "user", "content": logged["prompt"]}]
    )
    return messages if messages and messages[-1]["role"] == "user" else None


def items_from_dataset(dataset: Path, *, sample: int | None = None, seed: int = 0) -> Source:
    """Data-review items: a seeded sample (default: all) of a prepared chat dataset's rows, each row's
    final assistant turn the output to approve, reject or edit."""
    if not is_prepared_dataset(dataset):
        raise ConfigError(f"{dataset}: not a prepared dataset (no {MANIFEST}); see `tunesmith data prepare`")
    manifest = json.loads((dataset / MANIFEST).read_text(encoding="utf-8"))
    if manifest["kind"] != "chat":
        raise ConfigError(f"{dataset}: a data review reads chat datasets, this one is {manifest['kind']}")
    rows = [
        (split, line, row) for split in SPLITS for line, row in enumerate(read_split_rows(dataset, split))
    ]
    if sample is not None:
        rows = sorted(
            random.Random(seed).sample(rows, min(sample, len(rows))), key=lambda r: (SPLITS.index(r[0]), r[1])
        )
    items = [
        NewItem(row["messages"][:-1], None, [{"model": DATA_MODEL, "text": row["messages"][-1]["content"]}],
                {"split": split, "line": line})
        for split, line, row in rows
    ]  # fmt: skip
    source = {
        "dataset": str(dataset.resolve()),
        "dataset_hash": manifest["hash"],
        "sample": sample,
        "seed": seed,
    }
    return items, source


def read_split_rows(dataset: Path, split: str) -> list[dict[str, Any]]:
    """The rows of one split of a prepared dataset, as written (none when the split is empty or absent)."""
    path = dataset / f"{split}.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def collect_items(
    store: ServingStore,
    caller: Caller,
    kind: ReviewKind,
    *,
    evaluation: Path | None = None,
    deployment: str | None = None,
    dataset: Path | None = None,
    models: list[str] | None = None,
    examples: int | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> Source:
    """Items from exactly one of an evaluation folder, a deployment's requests or a prepared dataset (its
    folder or its id in the registry)."""
    if sum(source is not None for source in (evaluation, deployment, dataset)) != 1:
        raise ConfigError("give one source: --evaluation DIR, --deployment NAME or --dataset DIR")
    if (kind is ReviewKind.data) != (dataset is not None):
        raise ConfigError("a data review reads --dataset DIR, and a dataset is only reviewed as --kind data")
    if evaluation is not None:
        return items_from_evaluation(evaluation, kind, examples=examples, models=models)
    if deployment is not None:
        return items_from_requests(store, caller, deployment, kind, sample=sample or 50, seed=seed)
    assert dataset is not None
    if not dataset.is_dir():  # a dataset version's id (its hash) in the registry
        recorded = store.registry.get_dataset(str(dataset))
        if recorded is None:
            raise ConfigError(
                f"{dataset}: neither a prepared dataset folder nor a dataset id in the registry"
            )
        dataset = Path(recorded["path"])
    return items_from_dataset(dataset, sample=sample, seed=seed)
