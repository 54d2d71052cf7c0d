"""The LLM judge through tunesmith's own OpenAI-compatible server (uvicorn on a free port, the real
`openai` client) and through a local model; parsing, position-bias cancelling, agreement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, start_uvicorn, write_jsonl
from tunesmith.config import ServeSpec, TrainSpec
from tunesmith.eval.judge import (
    EndpointJudge,
    LocalJudge,
    pairwise_conversation,
    pairwise_preferences,
    parse_choice,
    rubric_conversation,
    rubric_scores,
    spearman,
    summarize_pairwise,
    summarize_rubric,
)
from tunesmith.models.loading import load_model, load_tokenizer
from tunesmith.registry.store import Registry
from tunesmith.serve.app import create_app
from tunesmith.train.sft import train_sft

QUESTIONS = ["when do you open", "is there wifi", "do you have oat milk"]
ANSWERS = ["at eight", "yes, ask for the password", "we do"]
OTHERS = ["no idea", "maybe", "what"]


def _judge_adapter(tiny_model_dir: Path, root: Path, name: str, conversations: list, reply: str) -> Path:
    rows = [
        {"messages": [*conversation, {"role": "assistant", "content": reply}]}
        for conversation in conversations
    ]
    spec = TrainSpec(model=str(tiny_model_dir), data=write_jsonl(root / f"{name}.jsonl", rows), max_steps=10,
                     batch_size=8, lr=5e-2, warmup_ratio=0.0, save_every=100, eval_every=100, out=root / name)  # fmt: skip
    result = train_sft(spec, progress=False)
    assert result.artifact_dir is not None
    return Path(result.artifact_dir)


@pytest.fixture(scope="module")
def judge_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The tiny model served with two judge adapters: one always rates 4, one always answers "A".

    A few steps teach the token but not yet to stop (replies run on: "4444"), so the judges here read one token.
    """
    root = tmp_path_factory.mktemp("judge")
    rubric = [
        rubric_conversation("accuracy", "correct?", q, a, a) for q in QUESTIONS for a in ANSWERS + OTHERS
    ]
    pairwise = [pairwise_conversation(q, a, b, a) for q in QUESTIONS for a in ANSWERS for b in OTHERS]
    adapters = {
        "rates-four": str(_judge_adapter(tiny_model_dir, root, "rates-four", rubric, "4")),
        "says-a": str(_judge_adapter(tiny_model_dir, root, "says-a", pairwise, "A")),
    }
    spec = ServeSpec(model=str(tiny_model_dir), port=free_port(), auth=False, adapters=adapters)
    registry = Registry(f"sqlite:///{root / 'registry.db'}").connect()
    server, thread = start_uvicorn(create_app(spec, registry), spec.host, spec.port)
    yield f"http://{spec.host}:{spec.port}/v1"
    server.should_exit = True
    thread.join(30)


def test_endpoint_judge_scores_by_rubric_and_cancels_position_bias(judge_server: str) -> None:
    scores = rubric_scores(EndpointJudge(judge_server, "rates-four", max_tokens=1), {"accuracy": "correct?"}, QUESTIONS, ANSWERS,
                           ANSWERS)  # fmt: skip
    assert scores == {"accuracy": [4, 4, 4]}
    # a judge that always picks the first position prefers A, then (orders swapped) B: a split, 0.5 each
    outcomes = pairwise_preferences(
        EndpointJudge(judge_server, "says-a", max_tokens=1), QUESTIONS, ANSWERS, OTHERS, ANSWERS
    )
    assert outcomes == [0.5, 0.5, 0.5]
    summary = summarize_pairwise(outcomes, [1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    assert summary["win_rate"] == 0.5 and summary["position_bias_or_tie"] == 3
    assert summary["agreement_with_metric"] is None  # no decided pair to agree on
    # a reply that holds no score is counted, never guessed
    unparseable = rubric_scores(EndpointJudge(judge_server, "says-a", max_tokens=1), {"accuracy": "correct?"}, QUESTIONS[:1],
                                ANSWERS[:1], ANSWERS[:1])  # fmt: skip
    assert unparseable == {"accuracy": [None]}
    assert summarize_rubric(unparseable, [1.0])["accuracy"]["unparseable"] == 1


def test_local_judge_always_answers_from_the_allowed_options(tiny_model_dir: Path) -> None:
    judge = LocalJudge(load_model(str(tiny_model_dir)).eval(), load_tokenizer(str(tiny_model_dir)))
    scores = rubric_scores(judge, {"helpfulness": "helpful?"}, QUESTIONS, ANSWERS, ANSWERS)["helpfulness"]
    assert len(scores) == 3 and all(score in (1, 2, 3, 4, 5) for score in scores)
    outcomes = pairwise_preferences(judge, QUESTIONS, ANSWERS, OTHERS, ANSWERS)
    assert all(outcome in (0.0, 0.5, 1.0) for outcome in outcomes)


def test_parsing_agreement_and_rank_correlation() -> None:
    assert parse_choice("Score: 4/5", ["1", "2", "3", "4", "5"]) == 3
    assert parse_choice("I think B is better than A", ["A", "B"]) == 1  # the first option named
    assert parse_choice("Answer", ["A", "B"]) is None  # letters inside words do not count
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties take their average rank: ranks (1.5, 1.5, 3) vs (1, 2, 3) → r = 0.866
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(0.8660, abs=1e-4)
    assert spearman([3, 3, 3], [1, 2, 3]) is None
    summary = summarize_pairwise([1.0, 0.0, None, 1.0], [0.9, 0.1, 0.5, 0.2], [0.1, 0.8, 0.5, 0.3])
    assert summary["win_rate"] == pytest.approx(2 / 3) and summary["unparseable"] == 1
    assert summary["agreement_with_metric"] == pytest.approx(2 / 3)  # the last pair: judge says A, metric B
