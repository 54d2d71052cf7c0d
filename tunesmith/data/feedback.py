"""Training data from what people said about served answers: feedback becomes SFT, DPO and KTO rows.

Owns: turning logged requests and their feedback (plain dicts, as the serving registry lists them)
into rows in the forms `tunesmith data prepare` reads, each carrying the request and feedback ids it
came from (`source_ids`, kept through preparation): a preference between two answers to the same prompt
→ a DPO pair; a ranking of several answers to one prompt → every implied pair; a correction → an SFT conversation and a DPO pair (the correction chosen over the
answer); thumbs and ratings → KTO rows (good at or above `good_rating`, bad at or below `bad_rating`).
Feedback that yields no row (a comment alone, a middling rating, answers to different prompts) is
listed with the reason, never dropped silently. Then `prepare_feedback_dataset` writes each kind through
`prepare_data` (PII, dedupe, a split grouped by request so no prompt leaks across splits), one dataset
per kind. Does not own: reading the registry (the caller passes the rows) or training.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.config import PrepareSpec
from tunesmith.data.prepare import DatasetRegistry, PrepareResult, prepare_data
from tunesmith.data.records import Message

KINDS = ("sft", "dpo", "kto")  # the datasets written, by the method that trains on them


@dataclass
class FeedbackRows:
    sft: list[dict[str, Any]] = field(default_factory=list)  # {"messages": [...]}
    dpo: list[dict[str, Any]] = field(default_factory=list)  # {"prompt": [...], "chosen", "rejected"}
    kto: list[dict[str, Any]] = field(default_factory=list)  # {"prompt": [...], "completion", "label"}
    unused: list[str] = field(default_factory=list)  # "feedback 7: why it gave no row"


def feedback_rows(
    requests: list[dict[str, Any]],
    feedback: list[dict[str, Any]],
    *,
    good_rating: int = 4,
    bad_rating: int = 2,
) -> FeedbackRows:
    """Rows from `feedback` on `requests` (request-log rows with `id`, `prompt`, `outputs`)."""
    by_id = {request["id"]: request for request in requests}
    rows = FeedbackRows()
    for item in feedback:
        request = by_id[item["response_id"]]
        ids = {"request_id": request["id"], "feedback_id": item["id"]}
        if not request["prompt"] or not request["outputs"]:  # its tenant's request log is `off`
            rows.unused.append(f"feedback {item['id']}: request {request['id']} was logged without its text")
            continue
        prompt, answer = _prompt(request), request["outputs"][0]
        if prompt is None:
            rows.unused.append(
                f"feedback {item['id']}: request {request['id']} does not end with a user turn"
            )
            continue
        if item.get("preferred_over"):
            other = by_id[item["preferred_over"]]
            if _prompt(other) != prompt:
                rows.unused.append(f"feedback {item['id']}: the two answers were to different prompts")
            else:
                _pair(
                    rows, item, prompt, answer, other["outputs"][0], ids | {"other_request_id": other["id"]}
                )
        if item.get("ranking"):
            _ranking(rows, item, prompt, by_id, ids)
        if item.get("correction"):
            correction = item["correction"]
            rows.sft.append(
                {"messages": [*prompt, {"role": "assistant", "content": correction}], **_ids(ids)}
            )
            _pair(rows, item, prompt, correction, answer, ids)
        label = _label(item, good_rating, bad_rating)
        if label is not None:
            rows.kto.append({"prompt": prompt, "completion": answer, "label": label, **_ids(ids)})
        elif item.get("rating") is not None:
            rows.unused.append(
                f"feedback {item['id']}: rating {item['rating']} is neither good (>= {good_rating}) nor bad "
                f"(<= {bad_rating})"
            )
        if all(
            item.get(key) is None for key in ("preferred_over", "ranking", "correction", "rating", "thumbs")
        ):
            rows.unused.append(f"feedback {item['id']}: a comment only, no rating, correction or preference")
    return rows


def prepare_feedback_dataset(
    rows: FeedbackRows,
    out: Path,
    *,
    model: str,
    pii: str = "redact",
    seed: int = 42,
    registry: DatasetRegistry | None = None,
) -> dict[str, PrepareResult]:
    """Prepare each kind of row that exists into `out/<kind>` (sft, dpo, kto), as `data prepare` does."""
    results: dict[str, PrepareResult] = {}
    with tempfile.TemporaryDirectory() as directory:
        for kind in KINDS:
            kind_rows: list[dict[str, Any]] = getattr(rows, kind)
            if not kind_rows:
                continue
            source = Path(directory) / f"feedback-{kind}.jsonl"
            source.write_text("".join(json.dumps(row) + "\n" for row in kind_rows), encoding="utf-8")
            spec = PrepareSpec(
                inputs=[source], out=out / kind, model=model, pii=pii, seed=seed, group_by="request_id",
                calibrate=False, boilerplate_share=0.0,
            )  # fmt: skip
            results[kind] = prepare_data(spec, registry=registry)
    return results


def _pair(
    rows: FeedbackRows,
    item: dict[str, Any],
    prompt: list[Message],
    chosen: str,
    rejected: str,
    ids: dict[str, Any],
) -> None:
    if chosen.strip() == rejected.strip():
        rows.unused.append(f"feedback {item['id']}: the preferred answer is the same as the other")
    else:
        rows.dpo.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, **_ids(ids)})


def _ranking(
    rows: FeedbackRows,
    item: dict[str, Any],
    prompt: list[Message],
    by_id: dict[str, dict[str, Any]],
    ids: dict[str, Any],
) -> None:
    """Every pair a ranking implies (best first), when all its answers were to the same prompt."""
    ranked = [by_id.get(response) for response in item["ranking"]]
    if any(request is None or _prompt(request) != prompt for request in ranked):
        rows.unused.append(f"feedback {item['id']}: the ranked answers were not all to the same prompt")
        return
    for better, chosen in enumerate(ranked):
        for rejected in ranked[better + 1 :]:
            assert chosen is not None and rejected is not None
            links = ids | {"chosen_request_id": chosen["id"], "rejected_request_id": rejected["id"]}
            _pair(rows, item, prompt, chosen["outputs"][0], rejected["outputs"][0], links)


def _ids(ids: dict[str, Any]) -> dict[str, Any]:
    """The grouping column (a request's rows stay in one split) and the links kept in the dataset."""
    return {"request_id": ids["request_id"], "source_ids": ids}


def _prompt(request: dict[str, Any]) -> list[Message] | None:
    """The conversation a logged request answered, ending with the user's turn (None otherwise)."""
    logged = request["prompt"]
    messages: list[Message] = (
        [{"role": m["role"], "content": m["content"]} for m in logged["messages"]]
        if "messages" in logged
        else [{"role": "user", "content": logged["prompt"]}]
    )
    return messages if messages and messages[-1]["role"] == "user" else None


def _label(item: dict[str, Any], good_rating: int, bad_rating: int) -> bool | None:
    """Good (True), bad (False) or neither; thumbs count as ratings 5 and 1."""
    rating = item.get("rating")
    if rating is None and item.get("thumbs") is not None:
        rating = 5 if item["thumbs"] == "up" else 1
    if rating is None:
        return None
    return True if rating >= good_rating else False if rating <= bad_rating else None
