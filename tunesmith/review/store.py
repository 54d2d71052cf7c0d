"""The human review queue over the registry: create a task, hand each reviewer the next blind item,
store judgements, report progress and results. No torch.

Owns: who may do what (admins create and close tasks; reviewers and admins judge; a caller sees only
its tenant's tasks, an admin every task), the blind order (left/right shuffled per item and reviewer
by a hash, so a reviewer sees the same order again and two reviewers generally differ), resolving a
choice made on what was shown (A, B) to model identities when it is stored, refusing a second
judgement of one item by one reviewer, and an audit record for every change in the transaction that
makes it. Does not own: building items from evaluations, requests or datasets (see `sources`), the
statistics (see `stats`, `results`) or the tables (see `registry.review`).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tunesmith.audit.trail import append, key_actor, local_actor
from tunesmith.config import ConfigError
from tunesmith.registry.request_log import NotFoundError
from tunesmith.registry.review import ReviewItemRecord, ReviewJudgementRecord, ReviewTaskRecord
from tunesmith.registry.serving_records import Caller, Role
from tunesmith.registry.store import Registry
from tunesmith.review.records import (
    BOTH_BAD,
    DATA_CHOICES,
    PAIRWISE_CHOICES,
    TIE,
    Choice,
    ItemView,
    Judgement,
    NewItem,
    ReviewerProgress,
    ReviewKind,
    ReviewResults,
    ReviewTask,
    TaskProgress,
    TaskStatus,
)
from tunesmith.review.results import compute_results
from tunesmith.review.rubric import SCALE, RubricSpec

__all__ = ["ForbiddenError", "NotFoundError", "ReviewStore", "reviewer_id", "shown_order"]

PAIRED_KINDS = (ReviewKind.pairwise, ReviewKind.model_vs_human)  # two outputs per item, judged blind


class ForbiddenError(ConfigError):
    """The caller's role may not do this (a 403 over HTTP)."""


def reviewer_id(caller: Caller) -> str:
    """Who acted: the caller's key as the audit trail names it (`key:<id>`), or the local user (the CLI,
    a console with auth off)."""
    return key_actor(caller.key_id) if caller.key_id is not None else local_actor()


def shown_order(task_id: int, item_id: int, reviewer: str, models: list[str]) -> list[str]:
    """`models` in the order `reviewer` sees them: swapped or not by a hash of task, item and reviewer."""
    digest = hashlib.sha256(f"{task_id}\0{item_id}\0{reviewer}".encode()).digest()
    return list(reversed(models)) if digest[0] & 1 else list(models)


def _queue_rank(task_id: int, item_id: int, reviewer: str) -> str:
    """Where an item comes in `reviewer`'s queue: its own shuffle, so one model's outputs don't bunch."""
    return hashlib.sha256(f"queue\0{task_id}\0{item_id}\0{reviewer}".encode()).hexdigest()


def _can_see(caller: Caller, tenant: str | None) -> bool:
    """Admins see every task; others their own tenant's (a tenantless reviewer the tenantless tasks)."""
    return caller.is_admin or caller.tenant == tenant


def _require(caller: Caller, roles: tuple[Role, ...], doing: str) -> None:
    if caller.account_role not in roles:
        raise ForbiddenError(
            f"{doing} needs the {' or '.join(roles)} role; this key is a {caller.account_role}"
        )


def _task(record: ReviewTaskRecord, items: int) -> ReviewTask:
    return ReviewTask(
        record.id, record.name, record.tenant, ReviewKind(record.kind), record.rubric, dict(record.source),
        record.reviewers_per_item, TaskStatus(record.status), record.created_by, record.created_at, items,
        list(record.source["models"]),
    )  # fmt: skip


def _judgement(record: ReviewJudgementRecord) -> Judgement:
    return Judgement(
        record.id, record.task_id, record.item_id, record.reviewer, record.reviewer_name, list(record.shown),
        Choice(record.choice) if record.choice else None, record.preferred, record.scores, record.edited_text,
        record.comment, record.seconds, record.created_at,
    )  # fmt: skip


class ReviewStore:
    """Review queries over a connected `Registry`."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # ------------------------------------------------------------------ tasks

    def create(
        self,
        caller: Caller,
        name: str,
        kind: ReviewKind,
        items: list[NewItem],
        *,
        source: dict[str, Any],
        rubric: RubricSpec | None = None,
        reviewers_per_item: int = 2,
        tenant: str | None = None,
    ) -> ReviewTask:
        """A new open task over `items`, for `tenant`'s reviewers; admins only."""
        _require(caller, (Role.admin,), "creating a review task")
        _check_task(name, kind, items, rubric, reviewers_per_item)
        models = sorted({output["model"] for item in items for output in item.outputs})
        actor = reviewer_id(caller)
        with self.registry.session() as session, session.begin():
            record = ReviewTaskRecord(
                name=name, tenant=tenant, kind=str(kind), rubric=rubric.model_dump() if rubric else None,
                source={**source, "models": models}, reviewers_per_item=reviewers_per_item,
                status=str(TaskStatus.open), created_by=actor,
            )  # fmt: skip
            session.add(record)
            session.flush()
            for position, item in enumerate(items):
                session.add(ReviewItemRecord(task_id=record.id, position=position, prompt=item.prompt,
                                             reference=item.reference, outputs=item.outputs, source=item.source))  # fmt: skip
            after = {"name": name, "kind": str(kind), "tenant": tenant, "items": len(items), "models": models,
                     "reviewers_per_item": reviewers_per_item, "source": source}  # fmt: skip
            append(session, actor, "review.create", f"review:{record.id}", None, after)
            return _task(record, len(items))

    def list_tasks(self, caller: Caller) -> list[ReviewTask]:
        """The tasks `caller` may see, newest first."""
        with self.registry.session() as session:
            counts = dict(
                session.execute(
                    select(ReviewItemRecord.task_id, func.count()).group_by(ReviewItemRecord.task_id)
                ).all()
            )
            records = session.scalars(select(ReviewTaskRecord).order_by(ReviewTaskRecord.id.desc()))
            return [_task(r, counts.get(r.id, 0)) for r in records if _can_see(caller, r.tenant)]

    def get(self, task_id: int, caller: Caller) -> ReviewTask:
        """Task `task_id`; NotFoundError if missing or another tenant's (the two look the same)."""
        with self.registry.session() as session:
            record = self._visible(session, task_id, caller)
            return _task(record, self._count_items(session, task_id))

    def close(self, task_id: int, caller: Caller) -> ReviewTask:
        """Stop judging on a task (results and export stay); admins only."""
        _require(caller, (Role.admin,), "closing a review task")
        with self.registry.session() as session, session.begin():
            record = self._visible(session, task_id, caller)
            before = {"status": record.status}
            record.status = str(TaskStatus.closed)
            append(
                session,
                reviewer_id(caller),
                "review.close",
                f"review:{task_id}",
                before,
                {"status": "closed"},
            )
            return _task(record, self._count_items(session, task_id))

    # ------------------------------------------------------------------ judging

    def next_item(self, task_id: int, reviewer: Caller) -> ItemView | None:
        """The next item `reviewer` has not judged (and that still needs reviewers), shown blind; None when
        there is none left for them."""
        _require(reviewer, (Role.admin, Role.reviewer), "judging")
        who = reviewer_id(reviewer)
        with self.registry.session() as session:
            task = self._visible(session, task_id, reviewer)
            if task.status != TaskStatus.open:
                raise ConfigError(f"review task {task_id} is closed")
            items = session.scalars(
                select(ReviewItemRecord.id).where(ReviewItemRecord.task_id == task_id)
            ).all()
            judged = session.execute(
                select(ReviewJudgementRecord.item_id, ReviewJudgementRecord.reviewer).where(
                    ReviewJudgementRecord.task_id == task_id
                )
            ).all()
            counts = Counter(item_id for item_id, _ in judged)
            mine = {item_id for item_id, name in judged if name == who}
            waiting = [i for i in items if i not in mine and counts[i] < task.reviewers_per_item]
            if not waiting:
                return None
            # Items others started first (they complete sooner, and overlap gives agreement), then the shuffle.
            item = session.get_one(
                ReviewItemRecord, min(waiting, key=lambda i: (-counts[i], _queue_rank(task_id, i, who)))
            )
            shown = shown_order(task_id, item.id, who, [output["model"] for output in item.outputs])
            text = {output["model"]: output["text"] for output in item.outputs}
            return ItemView(
                task_id, item.id, ReviewKind(task.kind), list(item.prompt),
                None if task.kind == ReviewKind.model_vs_human else item.reference,
                [text[model] for model in shown], task.rubric, len(mine), len(items),
            )  # fmt: skip

    def record(
        self,
        task_id: int,
        item_id: int,
        reviewer: Caller,
        *,
        choice: Choice | None = None,
        scores: dict[str, int] | None = None,
        edited_text: str | None = None,
        comment: str | None = None,
        seconds: float | None = None,
    ) -> Judgement:
        """Store `reviewer`'s judgement of an item (A/B as `next_item` showed them); identities revealed.

        Raises:
            NotFoundError: no such task or item for this caller. ForbiddenError: a viewer.
            ConfigError: a closed task, a second judgement of the item, or a judgement the kind refuses.
        """
        _require(reviewer, (Role.admin, Role.reviewer), "judging")
        who = reviewer_id(reviewer)
        with self.registry.session() as session, session.begin():
            task = self._visible(session, task_id, reviewer)
            if task.status != TaskStatus.open:
                raise ConfigError(f"review task {task_id} is closed")
            item = session.get(ReviewItemRecord, item_id)
            if item is None or item.task_id != task_id:
                raise NotFoundError(f"no item {item_id} in review task {task_id}")
            twice = f"{reviewer.name or who} has already judged item {item_id} of task {task_id}"
            if session.scalar(
                select(ReviewJudgementRecord.id).where(
                    ReviewJudgementRecord.item_id == item_id, ReviewJudgementRecord.reviewer == who
                )
            ):
                raise ConfigError(twice)
            kind = ReviewKind(task.kind)
            _check_judgement(kind, task.rubric, choice, scores, edited_text)
            shown = shown_order(task_id, item_id, who, [output["model"] for output in item.outputs])
            record = ReviewJudgementRecord(
                task_id=task_id, item_id=item_id, reviewer=who, reviewer_name=reviewer.name, shown=shown,
                choice=str(choice) if choice else None, preferred=_preferred(kind, choice, shown),
                scores=scores, edited_text=edited_text, comment=comment, seconds=seconds,
            )  # fmt: skip
            session.add(record)
            try:
                session.flush()
            except IntegrityError as error:  # the same reviewer's second request, racing the first
                raise ConfigError(twice) from error
            after = {"item": item_id, "choice": record.choice, "preferred": record.preferred, "scores": scores,
                     "edited": edited_text is not None}  # fmt: skip
            append(session, who, "review.judge", f"review:{task_id}", None, after)
            return _judgement(record)

    # ------------------------------------------------------------------ reading

    def progress(self, task_id: int, caller: Caller) -> TaskProgress:
        """How far the task is: judgements stored, items complete, and each reviewer's count and time."""
        with self.registry.session() as session:
            task = self._visible(session, task_id, caller)
            items = self._count_items(session, task_id)
            judgements = self._judgements(session, task_id)
        per_item = Counter(j.item_id for j in judgements)
        reviewers: dict[str, list[Judgement]] = {}
        for judgement in judgements:
            reviewers.setdefault(judgement.reviewer, []).append(judgement)
        return TaskProgress(
            task_id, items, items * task.reviewers_per_item, len(judgements),
            sum(count >= task.reviewers_per_item for count in per_item.values()),
            [ReviewerProgress(who, done[0].reviewer_name, len(done), sum(j.seconds or 0.0 for j in done))
             for who, done in reviewers.items()],
        )  # fmt: skip

    def judgements(self, task_id: int, caller: Caller) -> list[Judgement]:
        """Every judgement of the task, oldest first, identities revealed."""
        with self.registry.session() as session:
            self._visible(session, task_id, caller)
            return self._judgements(session, task_id)

    def items(self, task_id: int, caller: Caller) -> list[dict[str, Any]]:
        """The task's items with the models behind each output (for results, export and the admin)."""
        with self.registry.session() as session:
            self._visible(session, task_id, caller)
            records = session.scalars(
                select(ReviewItemRecord)
                .where(ReviewItemRecord.task_id == task_id)
                .order_by(ReviewItemRecord.position)
            )
            return [
                {"id": r.id, "position": r.position, "prompt": r.prompt, "reference": r.reference,
                 "outputs": r.outputs, "source": r.source}
                for r in records
            ]  # fmt: skip

    def results(self, task_id: int, caller: Caller, *, samples: int = 1000, seed: int = 0) -> ReviewResults:
        """Win rates, strengths, rubric means, agreement and disagreements (see `results`)."""
        task = self.get(task_id, caller)
        return compute_results(
            task, self.items(task_id, caller), self.judgements(task_id, caller), samples, seed
        )

    # ------------------------------------------------------------------ helpers

    def _visible(self, session: Session, task_id: int, caller: Caller) -> ReviewTaskRecord:
        record = session.get(ReviewTaskRecord, task_id)
        if record is None or not _can_see(caller, record.tenant):
            raise NotFoundError(f"no review task {task_id}")
        return record

    def _count_items(self, session: Session, task_id: int) -> int:
        count = session.scalar(select(func.count()).where(ReviewItemRecord.task_id == task_id))
        return int(count or 0)

    def _judgements(self, session: Session, task_id: int) -> list[Judgement]:
        records = session.scalars(
            select(ReviewJudgementRecord)
            .where(ReviewJudgementRecord.task_id == task_id)
            .order_by(ReviewJudgementRecord.id)
        )
        return [_judgement(r) for r in records]


def _check_task(
    name: str, kind: ReviewKind, items: list[NewItem], rubric: RubricSpec | None, reviewers_per_item: int
) -> None:
    if not name.strip():
        raise ConfigError("a review task needs a name")
    if not items:
        raise ConfigError("a review task needs at least one item")
    if reviewers_per_item < 1:
        raise ConfigError(f"reviewers per item must be at least 1, got {reviewers_per_item}")
    if (kind is ReviewKind.rubric) != (rubric is not None):
        raise ConfigError("a rubric task needs a rubric (--rubric FILE), and only a rubric task takes one")
    outputs = 2 if kind in PAIRED_KINDS else 1
    for position, item in enumerate(items):
        if len(item.outputs) != outputs:
            raise ConfigError(
                f"item {position}: a {kind} item has {outputs} output(s), got {len(item.outputs)}"
            )
        if outputs == 2 and item.outputs[0]["model"] == item.outputs[1]["model"]:
            raise ConfigError(f"item {position}: the two outputs are from the same model")


def _check_judgement(
    kind: ReviewKind,
    rubric: dict[str, Any] | None,
    choice: Choice | None,
    scores: dict[str, int] | None,
    edited_text: str | None,
) -> None:
    """The fields each kind takes: a choice (pairwise kinds, data), scores (rubric), an edit (rubric, data)."""
    if kind in PAIRED_KINDS:
        if choice not in PAIRWISE_CHOICES or scores is not None or edited_text is not None:
            raise ConfigError(f"a {kind} judgement is a choice: A, B, tie or both_bad (no scores, no edit)")
    elif kind is ReviewKind.data:
        if choice not in DATA_CHOICES or scores is not None:
            raise ConfigError("a data judgement is approve or reject (with an edit, approve)")
        if choice is Choice.reject and edited_text is not None:
            raise ConfigError("a rejected row takes no edit: approve the edited row instead")
    else:
        assert rubric is not None
        criteria = set(rubric["criteria"])
        if choice is not None or scores is None or set(scores) != criteria:
            raise ConfigError(f"a rubric judgement scores every criterion: {', '.join(sorted(criteria))}")
        off = {name: score for name, score in scores.items() if not SCALE[0] <= score <= SCALE[1]}
        if off:
            raise ConfigError(f"scores must be {SCALE[0]}-{SCALE[1]}: {off}")
    if edited_text is not None and not edited_text.strip():
        raise ConfigError("an edit must not be empty")


def _preferred(kind: ReviewKind, choice: Choice | None, shown: list[str]) -> str | None:
    """The model a pairwise choice picked (A is `shown[0]`), or TIE / BOTH_BAD."""
    if kind not in PAIRED_KINDS:
        return None
    assert choice is not None  # `_check_judgement` ran
    return {Choice.a: shown[0], Choice.b: shown[1], Choice.tie: TIE, Choice.both_bad: BOTH_BAD}[choice]
