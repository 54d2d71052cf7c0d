"""Judgements become training data: a review task exported as versioned datasets in the registry.

Owns: turning a task's judgements into the rows `tunesmith data from-feedback` writes (the same
`FeedbackRows`, prepared by the same `prepare_feedback_dataset` into OUT/dpo, OUT/kto, OUT/sft), each
row's `source_ids` naming the task, item and judgements it came from, and each dataset recorded in
the registry with the task in its lineage:
- pairwise and model-vs-human: one DPO pair per item, the model most reviewers preferred over the
  other (an item without a majority, or with a tie / both bad on top, gives no pair and is listed);
- rubric: a KTO row per item, good when the mean score (over reviewers and criteria) is at least
  `good_rating`, bad at most `bad_rating`; each edit an SFT row and a DPO pair (the edit chosen over
  the output), as a correction is in `data.feedback`;
- data: the next version of the reviewed dataset: every row of it but the rejected ones (most of an
  item's reviewers rejected it), edits applied (the latest approving edit), as OUT/sft.
Does not own: preparing (see `data.prepare`) or reading the registry (see `store`). No torch here;
preparation loads the target model's tokenizer to count tokens.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tunesmith.audit.trail import append
from tunesmith.config import ConfigError
from tunesmith.data.feedback import FeedbackRows, prepare_feedback_dataset
from tunesmith.data.prepare import PrepareResult
from tunesmith.data.split import SPLITS
from tunesmith.registry.serving_records import Caller, Role
from tunesmith.registry.store import Registry
from tunesmith.review.records import BOTH_BAD, TIE, Choice, Judgement, ReviewKind, ReviewTask
from tunesmith.review.sources import read_split_rows
from tunesmith.review.store import ForbiddenError, ReviewStore, reviewer_id


class _TaskLineage:
    """The registry as `prepare_data` sees it, adding the review task to every dataset's lineage."""

    def __init__(self, registry: Registry, task: ReviewTask) -> None:
        self.registry = registry
        self.task = {"id": task.id, "name": task.name, "kind": str(task.kind), "source": task.source}

    def record_dataset(self, digest: str, path: str, rows: int, lineage: dict[str, Any]) -> None:
        self.registry.record_dataset(digest, path, rows, {**lineage, "review_task": self.task})

    def list_runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.registry.list_runs(limit)


def review_rows(
    task: ReviewTask,
    items: list[dict[str, Any]],
    judgements: list[Judgement],
    *,
    good_rating: int,
    bad_rating: int,
) -> FeedbackRows:
    """The rows a task's judgements give, in `data.feedback`'s shapes, with the reasons for items that gave none."""
    rows = FeedbackRows()
    by_item: dict[int, list[Judgement]] = {}
    for judgement in judgements:
        by_item.setdefault(judgement.item_id, []).append(judgement)
    for item in items:
        judged = by_item.get(item["id"], [])
        if not judged:
            continue
        ids = {"request_id": f"review:{task.id}:{item['id']}",
               "source_ids": {"review_task": task.id, "item_id": item["id"], "judgements": [j.id for j in judged]}}  # fmt: skip
        if task.kind in (ReviewKind.pairwise, ReviewKind.model_vs_human):
            _majority_pair(rows, item, judged, ids)
        elif task.kind is ReviewKind.rubric:
            _rated(rows, item, judged, ids, good_rating, bad_rating)
    return rows


def _majority_pair(
    rows: FeedbackRows, item: dict[str, Any], judged: list[Judgement], ids: dict[str, Any]
) -> None:
    votes = Counter(j.preferred for j in judged).most_common()
    winner, count = votes[0]
    if winner in (TIE, BOTH_BAD) or (len(votes) > 1 and votes[1][1] == count):
        rows.unused.append(f"item {item['id']}: no model preferred by most reviewers ({dict(votes)})")
        return
    text = {output["model"]: output["text"] for output in item["outputs"]}
    loser = next(model for model in text if model != winner)
    rows.dpo.append({"prompt": item["prompt"], "chosen": text[str(winner)], "rejected": text[loser], **ids})


def _rated(
    rows: FeedbackRows,
    item: dict[str, Any],
    judged: list[Judgement],
    ids: dict[str, Any],
    good_rating: int,
    bad_rating: int,
) -> None:
    answer = item["outputs"][0]["text"]
    scores = [score for j in judged for score in (j.scores or {}).values()]
    mean = sum(scores) / len(scores)
    if mean >= good_rating or mean <= bad_rating:
        rows.kto.append({"prompt": item["prompt"], "completion": answer, "label": mean >= good_rating, **ids})
    else:
        rows.unused.append(f"item {item['id']}: mean score {mean:.2f} is neither good nor bad")
    for j in judged:
        if j.edited_text is None:
            continue
        rows.sft.append(
            {"messages": [*item["prompt"], {"role": "assistant", "content": j.edited_text}], **ids}
        )
        if j.edited_text.strip() != answer.strip():
            rows.dpo.append({"prompt": item["prompt"], "chosen": j.edited_text, "rejected": answer, **ids})


def next_dataset_rows(
    task: ReviewTask, items: list[dict[str, Any]], judgements: list[Judgement]
) -> FeedbackRows:
    """A data review's next dataset version: the reviewed dataset's rows less the rejected, edits applied."""
    dataset = Path(task.source["dataset"])
    decisions: dict[tuple[str, int], list[Judgement]] = {}
    positions = {item["id"]: (item["source"]["split"], item["source"]["line"]) for item in items}
    for judgement in judgements:
        decisions.setdefault(positions[judgement.item_id], []).append(judgement)
    rows = FeedbackRows()
    for split in SPLITS:
        for line, row in enumerate(read_split_rows(dataset, split)):
            judged = decisions.get((split, line), [])
            rejected = sum(j.choice is Choice.reject for j in judged)
            if rejected and rejected > len(judged) - rejected:
                rows.unused.append(
                    f"{split}.jsonl:{line + 1}: rejected by {rejected} of {len(judged)} reviewers"
                )
                continue
            edits = [j.edited_text for j in judged if j.edited_text is not None]
            messages = (
                row["messages"]
                if not edits
                else [*row["messages"][:-1], {"role": "assistant", "content": edits[-1]}]
            )
            source_ids = {"dataset": task.source["dataset_hash"], "split": split, "line": line,
                          "review_task": task.id, "edited": bool(edits)}  # fmt: skip
            rows.sft.append({"messages": messages, "request_id": f"{split}:{line}", "source_ids": source_ids})
    return rows


def export_review(
    store: ReviewStore,
    task_id: int,
    caller: Caller,
    out: Path,
    *,
    model: str,
    pii: str = "redact",
    good_rating: int = 4,
    bad_rating: int = 2,
) -> tuple[dict[str, PrepareResult], list[str]]:
    """Prepare task `task_id`'s rows into OUT/<kind>, record each dataset with the task in its lineage and
    audit the export; returns the results by kind and the reasons some items gave no row."""
    if caller.account_role is not Role.admin:
        raise ForbiddenError(
            f"exporting a review task needs the admin role; this key is a {caller.account_role}"
        )
    task = store.get(task_id, caller)
    items, judgements = store.items(task_id, caller), store.judgements(task_id, caller)
    if not judgements:
        raise ConfigError(f"review task {task_id} has no judgements yet")
    if task.kind is ReviewKind.data:
        rows = next_dataset_rows(task, items, judgements)
    else:
        rows = review_rows(task, items, judgements, good_rating=good_rating, bad_rating=bad_rating)
    if not (rows.sft or rows.dpo or rows.kto):
        raise ConfigError(f"review task {task_id}: no judgement gave a row ({'; '.join(rows.unused[:3])})")
    results = prepare_feedback_dataset(
        rows, out, model=model, pii=pii, registry=_TaskLineage(store.registry, task)
    )
    after = {"out": str(out.resolve()), "datasets": {kind: result.hash for kind, result in results.items()},
             "unused": len(rows.unused)}  # fmt: skip
    with store.registry.session() as session, session.begin():
        append(session, reviewer_id(caller), "review.export", f"review:{task_id}", None, after)
    return results, rows.unused
