"""What the review store hands out: tasks, the blind item a reviewer sees, judgements, progress and
results, as typed records (each with `to_dict` for JSON). No torch.

Owns: the kinds of review and the choices a reviewer makes, and these shapes. Does not own: queries
(see `store`), the statistics (see `stats`) or the rubric spec (see `rubric`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tunesmith.data.records import Message
from tunesmith.eval.stats import Interval

HUMAN = "human"  # the model identity of a reference in a model-vs-human task
TIE = "tie"  # a judgement's `preferred` when the reviewer could not choose
BOTH_BAD = "both_bad"  # a judgement's `preferred` when neither output was acceptable


class ReviewKind(StrEnum):
    """What reviewers do with each item."""

    pairwise = "pairwise"  # two models' outputs, blind, left/right shuffled: A, B, tie or both bad
    rubric = "rubric"  # one output scored 1-5 on each rubric criterion, optionally edited
    model_vs_human = "model_vs_human"  # the model's output against the human reference, blind, as pairwise
    data = "data"  # a prepared dataset's row: approve, reject, or edit it


class Choice(StrEnum):
    """A reviewer's choice on an item, as shown (A is the left output)."""

    a = "A"
    b = "B"
    tie = "tie"
    both_bad = "both_bad"
    approve = "approve"  # data review: keep the row as it is (or as edited)
    reject = "reject"  # data review: drop the row


PAIRWISE_CHOICES = (Choice.a, Choice.b, Choice.tie, Choice.both_bad)
DATA_CHOICES = (Choice.approve, Choice.reject)


class TaskStatus(StrEnum):
    """A review task's lifecycle."""

    open = "open"  # reviewers may judge its items
    closed = "closed"  # judging is over; results and export stay available


@dataclass(frozen=True)
class NewItem:
    """An item to create: the prompt, its reference and the outputs under review with their models."""

    prompt: list[Message]
    reference: str | None
    outputs: list[dict[str, str]]  # [{"model": "acme@2", "text": "..."}], 1 or 2 of them
    source: dict[str, Any]  # where it came from, e.g. {"example": 3}, {"request_id": "r1"}, {"row": 7}


@dataclass(frozen=True)
class ReviewTask:
    id: int
    name: str
    tenant: str | None
    kind: ReviewKind
    rubric: dict[str, Any] | None  # a `RubricSpec` written out
    source: dict[str, Any]
    reviewers_per_item: int
    status: TaskStatus
    created_by: str
    created_at: datetime
    items: int
    models: list[str]  # every model whose outputs the task holds (HUMAN for references)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class ItemView:
    """An item as a reviewer sees it: outputs in this reviewer's order, no model identities."""

    task_id: int
    item_id: int
    kind: ReviewKind
    prompt: list[Message]
    reference: str | None  # None in a model-vs-human task (the reference is one of the outputs)
    outputs: list[str]  # left (A) to right (B); one output for rubric and data items
    rubric: dict[str, Any] | None
    done: int  # items this reviewer has judged in the task
    total: int  # items in the task

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Judgement:
    """A stored judgement, identities revealed: `shown` is the order the models were shown in."""

    id: int
    task_id: int
    item_id: int
    reviewer: str
    reviewer_name: str | None
    shown: list[str]
    choice: Choice | None
    preferred: str | None  # a model, TIE or BOTH_BAD (pairwise kinds); None otherwise
    scores: dict[str, int] | None
    edited_text: str | None
    comment: str | None
    seconds: float | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class ReviewerProgress:
    reviewer: str  # "key:<id>"
    name: str | None
    judged: int
    seconds: float  # summed time on items, as the pages reported it


@dataclass(frozen=True)
class TaskProgress:
    task_id: int
    items: int
    needed: int  # items x reviewers per item
    judged: int  # judgements stored
    complete_items: int  # items with all their reviewers
    reviewers: list[ReviewerProgress]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Agreement:
    """Agreement between reviewers on one target (the pairwise choice, a criterion, the data decision)."""

    target: str  # "choice" (pairwise kinds), "decision" (data) or a rubric criterion
    items: int  # items judged by two or more reviewers
    reviewers: int
    cohen_kappa: float | None  # exactly two reviewers, on the items both judged
    fleiss_kappa: float | None  # on the items with the task's number (>= 2) of reviewers
    # Krippendorff's alpha by level: nominal for choices; nominal, ordinal and interval for scores.
    # Any number of reviewers, missing judgements allowed. None: undefined (no pairable item, or every
    # value the same, so there is no variation to agree on).
    krippendorff_alpha: dict[str, float | None]


@dataclass(frozen=True)
class Disagreement:
    item_id: int
    target: str
    values: dict[str, str | int]  # reviewer -> what they said (resolved model, score or decision)
    prompt: str  # the last user turn, for the listing


@dataclass
class ReviewResults:
    """Everything `review results` prints; intervals are 95% bootstrap intervals over items.

    Not frozen: `results.compute_results` fills it in, part by part, as the task's kind has them."""

    task: ReviewTask
    judgements: int
    win_rates: dict[str, Interval] = field(default_factory=dict)  # model -> wins + ties/2 share
    strengths: dict[str, Interval] = field(default_factory=dict)  # model -> Bradley-Terry log-strength
    rubric_means: dict[str, dict[str, Interval]] = field(default_factory=dict)  # model -> criterion -> mean
    model_vs_human: Interval | None = None  # share preferring the model or unable to tell
    decisions: dict[str, int] = field(default_factory=dict)  # data review: approved, rejected, edited
    agreement: list[Agreement] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def intervals(values: dict[str, Interval]) -> dict[str, dict[str, float]]:
            return {key: value.to_dict() for key, value in values.items()}

        return {
            "task": self.task.to_dict(),
            "judgements": self.judgements,
            "win_rates": intervals(self.win_rates),
            "strengths": intervals(self.strengths),
            "rubric_means": {model: intervals(means) for model, means in self.rubric_means.items()},
            "model_vs_human": self.model_vs_human.to_dict() if self.model_vs_human else None,
            "decisions": self.decisions,
            "agreement": [asdict(row) for row in self.agreement],
            "disagreements": [asdict(row) for row in self.disagreements],
        }
