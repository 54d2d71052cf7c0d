"""Guardrails through the app (tiny model, in process): prompts refused, redacted or answered with a
refusal; answers stopped before a blocked span, streamed or not; changes applied at the next request;
actions counted in `/metrics` and logged; one audit record per change; the classifier adapter."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tunesmith.audit.guardrails import Classifier
from tunesmith.audit.trail import read_log
from tunesmith.cli import app as cli
from tunesmith.config import ConfigError, GuardrailSpec, ServeSpec, default_database_url
from tunesmith.registry.guardrail_store import GuardrailStore
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.app import create_app

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def client(tiny_model_dir: Path, adapter_dirs: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Registry]]:  # fmt: skip
    registry = Registry(f"sqlite:///{tmp_path_factory.mktemp('guard') / 'registry.db'}").connect()
    store = ServingStore(registry)
    admin_key = store.create_key(None, admin=True)
    store.register_adapter("voice", adapter_dirs[0].resolve(), str(tiny_model_dir), tenant=None)
    spec = ServeSpec(model=str(tiny_model_dir), guardrails={"voice": GuardrailSpec.model_validate(
        {"terms": {"blocklist": ["forbidden fruit"]}, "refusal": "I cannot talk about that."})})  # fmt: skip
    with TestClient(create_app(spec, registry)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin_key}"
        yield test_client, registry


def _put(client: TestClient, target: str, spec: dict[str, Any]) -> None:
    response = client.put(f"/admin/guardrails/{target}", json=spec)
    assert response.status_code == 200, response.text


def _chat(client: TestClient, content: str, model: str = "base", **body: Any) -> Any:
    return client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 24, "temperature": 0,
        **body,
    })  # fmt: skip


def _logged(client: TestClient, target: str, count: int) -> list[dict[str, Any]]:
    """The target's latest logged actions, once `count` are there (they are written off the request)."""
    deadline = time.monotonic() + 10
    while True:
        events: list[dict[str, Any]] = client.get(
            "/admin/guardrail-events", params={"target": target}
        ).json()["data"]
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def _streamed(client: TestClient, content: str, model: str = "base") -> tuple[str, str | None]:
    text, reason = "", None
    with client.stream("POST", "/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 24, "temperature": 0,
        "stream": True,
    }) as response:  # fmt: skip
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                text += choice["delta"].get("content", "")
                reason = choice["finish_reason"] or reason
    return text, reason


def test_a_blocked_span_of_the_answer_never_reaches_the_client_streamed_or_not(
    client: tuple[TestClient, Registry],
) -> None:
    test_client, _ = client
    answer = _chat(test_client, "tell me a story").json()["choices"][0]["message"]["content"]
    assert len(answer) > 12
    blocked = answer[len(answer) // 2 : len(answer) // 2 + 4]  # a span the tiny model will say again
    _put(test_client, "base", {"terms": {"patterns": {"SECRET": re.escape(blocked)}, "output": "block"}})
    try:
        expected = answer[: answer.index(blocked)]
        choice = _chat(test_client, "tell me a story").json()["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == (expected, "content_filter")
        assert _streamed(test_client, "tell me a story") == (expected, "content_filter")
        metrics = test_client.get("/metrics").text
        assert 'tunesmith_guardrail_actions_total{action="block",guard="terms"} 2.0' in metrics
        events = _logged(test_client, "base", 2)
        assert [(e["direction"], e["guard"], e["reason"]) for e in events[:2]] == [("output", "terms", "pattern SECRET")] * 2  # fmt: skip
    finally:
        assert test_client.delete("/admin/guardrails/base").status_code == 200
    assert (
        _chat(test_client, "tell me a story").json()["choices"][0]["message"]["content"] == answer
    )  # cleared


def test_prompts_are_refused_redacted_or_answered_with_the_refusal(
    client: tuple[TestClient, Registry],
) -> None:
    test_client, registry = client
    _put(test_client, "base", {"pii": {"input": "block"}, "max_input_chars": 200})
    try:
        response = _chat(test_client, "my card is 4111 1111 1111 1111")
        assert response.status_code == 400 and response.json()["error"]["code"] == "content_filter"
        assert "personal data (CARD)" in response.json()["error"]["message"]
        assert (
            _chat(test_client, "x" * 201)
            .json()["error"]["message"]
            .startswith("the prompt is 201 characters")
        )
        _put(test_client, "base", {"pii": {"input": "redact"}})
        response = _chat(test_client, "write to jane@acme.io")
        literal = _chat(test_client, "write to [EMAIL]").json()  # what the model must have been given
        assert response.status_code == 200 and response.json()["usage"] == literal["usage"]
        assert response.json()["choices"][0]["message"] == literal["choices"][0]["message"]
        logged = test_client.get(f"/admin/requests/{response.json()['id']}").json()
        assert logged["prompt"]["messages"][0]["content"] == "write to [EMAIL]"
    finally:
        test_client.delete("/admin/guardrails/base")
    # the config file's guardrails of adapter `voice`: its refusal instead of a 400, streamed or not
    choice = _chat(test_client, "the Forbidden  Fruit?", model="voice").json()["choices"][0]
    assert choice == {"index": 0, "message": {"role": "assistant", "content": "I cannot talk about that."},
                      "finish_reason": "content_filter"}  # fmt: skip
    assert _streamed(test_client, "the forbidden fruit", "voice") == (
        "I cannot talk about that.",
        "content_filter",
    )
    assert test_client.get("/admin/guardrails/voice").json()["source"] == "config"


def test_bad_settings_are_refused_naming_the_key(client: tuple[TestClient, Registry]) -> None:
    test_client, _ = client
    response = test_client.put("/admin/guardrails/base", json={"terms": {"patterns": {"ORDER": "ORD-(\\d+"}}})
    assert response.status_code == 400 and "patterns.ORDER: not a regular expression" in response.json()["error"]["message"]  # fmt: skip
    response = test_client.put("/admin/guardrails/nothing", json={})
    assert response.status_code == 404 and "no deployment or adapter named nothing" in response.text


def test_each_change_leaves_exactly_one_audit_record_from_the_cli_and_the_api(
    client: tuple[TestClient, Registry], tmp_path: Path
) -> None:
    test_client, registry = client
    for call, action in [(lambda: _put(test_client, "voice", {"max_output_chars": 50}), "guardrails.set"),
                         (lambda: test_client.delete("/admin/guardrails/voice"), "guardrails.clear")]:  # fmt: skip
        before = len(read_log(registry))
        call()
        after = read_log(registry)
        assert len(after) == before + 1 and after[-1]["action"] == action and after[-1]["actor"] == "key:1"
    local = Registry(default_database_url()).connect()  # the CLI's registry (this test's home)
    ServingStore(local).create_deployment("shop", [{"model": "base", "weight": 1}], tenant=None)
    guard_file = tmp_path / "guard.yaml"
    guard_file.write_text(yaml.safe_dump({"pii": {"output": "redact", "kinds": ["EMAIL"]}}), encoding="utf-8")
    runner = CliRunner()
    for args, action in [(["set", "shop", "--config", str(guard_file)], "guardrails.set"),
                         (["clear", "shop"], "guardrails.clear")]:  # fmt: skip
        before = len(read_log(local))
        result = runner.invoke(cli, ["guardrails", *args])
        assert result.exit_code == 0, result.output
        after = read_log(local)
        assert (
            len(after) == before + 1
            and after[-1]["action"] == action
            and after[-1]["actor"].startswith("user:")
        )
    GuardrailStore(local).record_events("r1", "shop", [{"direction": "output", "guard": "pii", "action": "redact",
                                                        "reason": "EMAIL"}])  # fmt: skip
    printed = runner.invoke(cli, ["guardrails", "events", "--target", "shop", "--json"])
    assert [(e["request_id"], e["reason"]) for e in json.loads(printed.output)] == [("r1", "EMAIL")]
    assert json.loads(runner.invoke(cli, ["guardrails", "list", "--json"]).output) == []
    guard_file.write_text("terms: {patterns: {ORDER: 'ORD-(\\d+'}}", encoding="utf-8")
    result = runner.invoke(cli, ["guardrails", "set", "shop", "--config", str(guard_file)])
    assert isinstance(result.exception, ConfigError)  # `tunesmith` prints it and exits with 2
    assert "guard.yaml.terms: Value error, patterns.ORDER: not a regular expression" in str(result.exception)


def test_the_classifier_adapter_scores_labels_and_blocks_over_the_threshold(
    client: tuple[TestClient, Registry],
) -> None:
    test_client, _ = client
    moderator = test_client.app.state.service.guardrails  # type: ignore[attr-defined]
    classifier = Classifier("voice", ("safe", "unsafe"), frozenset({"unsafe"}), 0.5, None, False)
    probabilities = test_client.portal.call(moderator.classify, classifier, "hello")  # type: ignore[union-attr]
    assert len(probabilities) == 2 and abs(sum(probabilities) - 1) < 1e-5
    unsafe = probabilities[1]
    settings = {
        "classifier": {"adapter": "voice", "labels": ["safe", "unsafe"], "blocked_labels": ["unsafe"]}
    }
    _put(
        test_client,
        "base",
        {**settings, "classifier": {**settings["classifier"], "threshold": unsafe * 0.99}},
    )
    try:
        response = _chat(test_client, "hello")
        assert response.status_code == 400 and "classified as unsafe" in response.json()["error"]["message"]
        _put(test_client, "base", {**settings, "classifier": {**settings["classifier"], "threshold": min(1, unsafe * 1.01)}})  # fmt: skip
        assert _chat(test_client, "hello").status_code == 200
    finally:
        test_client.delete("/admin/guardrails/base")


@pytest.mark.parametrize("action", ["redact", "block"])
def test_a_generation_sends_only_guarded_text_on_the_seeded_pii_set(action: str) -> None:
    """`Generation.events`, which both the streamed and the whole response read, on answers with PII
    arriving token by token (no model: the events are queued here)."""
    import asyncio
    import random
    from types import SimpleNamespace

    from tests.unit.audit.pii_cases import pii_cases
    from tunesmith.audit.guardrails import compile_guard
    from tunesmith.serve.jobs import JobEvent
    from tunesmith.serve.metrics import ServeMetrics
    from tunesmith.serve.service import Generation, Target

    guard = compile_guard(GuardrailSpec.model_validate({"pii": {"output": action}}))
    cases, rng = pii_cases(seed=4, per_kind=20, look_alikes=120), random.Random(4)

    async def run(answer: str) -> tuple[list[str], str]:
        queue: asyncio.Queue[tuple[int, JobEvent]] = asyncio.Queue()
        cursor = 0
        while cursor < len(answer):
            size = rng.randint(1, 5)
            queue.put_nowait((0, JobEvent("delta", answer[cursor : cursor + size])))
            cursor += size
        queue.put_nowait((0, JobEvent("done", finish_reason="stop", completion_tokens=1)))
        job = SimpleNamespace(cancelled=False)
        generation = Generation(Target("base", None, None), 1, [job], queue, "r", 30, lambda used: None,  # type: ignore[list-item]
                                ServeMetrics(), output_guard=guard)  # fmt: skip
        sent = [event.text async for _, event in generation.events() if event.kind == "delta"]
        return sent, generation.finish_reasons[0]

    detected = []
    for case in cases:
        answer = f"Here is the record you asked for. {case.text} Have a nice day."
        sent, reason = asyncio.run(run(answer))
        detected.append(case.value not in "".join(sent))
        if case.kind and action == "block":
            assert "".join(sent) == answer[: answer.index(case.value)] and reason == "content_filter"
    planted = [hit for case, hit in zip(cases, detected, strict=True) if case.kind]
    false = [hit for case, hit in zip(cases, detected, strict=True) if not case.kind]
    recall, precision = sum(planted) / len(planted), sum(planted) / max(1, sum(planted) + sum(false))
    assert recall >= 0.95 and precision >= 0.90, (recall, precision)


def test_completions_are_guarded_like_chat(client: tuple[TestClient, Registry]) -> None:
    test_client, _ = client
    body = {"model": "base", "prompt": "once upon a time", "max_tokens": 24, "temperature": 0}
    answer = test_client.post("/v1/completions", json=body).json()["choices"][0]["text"]
    blocked = answer[len(answer) // 2 : len(answer) // 2 + 4]
    _put(test_client, "base", {"pii": {"input": "block"}, "terms": {"patterns": {"SECRET": re.escape(blocked)}, "output": "block"}})  # fmt: skip
    try:
        choice = test_client.post("/v1/completions", json=body).json()["choices"][0]
        assert (choice["text"], choice["finish_reason"]) == (
            answer[: answer.index(blocked)],
            "content_filter",
        )
        with test_client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            chunks = [
                json.loads(line[6:])["choices"][0]
                for line in response.iter_lines()
                if line.startswith("data: {")
            ]
        assert "".join(c["text"] for c in chunks) == answer[: answer.index(blocked)]
        assert chunks[-1]["finish_reason"] == "content_filter"
        refused = test_client.post("/v1/completions", json={**body, "prompt": ["fine", "mail a@b.io"]})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "prompt"
    finally:
        test_client.delete("/admin/guardrails/base")


def test_the_actions_on_a_stream_its_client_abandoned_are_recorded() -> None:
    import asyncio
    from types import SimpleNamespace

    from tunesmith.audit.guardrails import compile_guard
    from tunesmith.serve.jobs import JobEvent
    from tunesmith.serve.metrics import ServeMetrics
    from tunesmith.serve.service import Generation, Target

    recorded: list[tuple[str, str, list[str]]] = []
    recorder = SimpleNamespace(record=lambda rid, target, events: recorded.append((rid, target, [e.reason for e in events])))  # fmt: skip

    async def abandon() -> None:
        queue: asyncio.Queue[tuple[int, JobEvent]] = asyncio.Queue()
        for chunk in ["mail jane@acme.io ", "and then ", "more ", "words "]:  # no end: the job goes on
            queue.put_nowait((0, JobEvent("delta", chunk)))
        guard = compile_guard(GuardrailSpec.model_validate({"pii": {"output": "redact"}}))
        generation = Generation(Target("base", None, None), 1, [SimpleNamespace(cancelled=False)], queue, "r9", 30,  # type: ignore[list-item]
                                lambda used: None, ServeMetrics(), output_guard=guard, guard_target="shop",
                                guardrails=recorder)  # type: ignore[arg-type]  # fmt: skip
        events = generation.events()
        assert (await anext(events))[1].text == "mail [EMAIL] "
        await events.aclose()  # what a disconnect does to the stream

    asyncio.run(abandon())
    assert recorded == [("r9", "shop", ["EMAIL"])]


def test_the_classifier_adapter_can_block_whole_answers_streamed_or_not(
    client: tuple[TestClient, Registry],
) -> None:
    test_client, _ = client
    guardrails = test_client.app.state.service.guardrails  # type: ignore[attr-defined]
    answer = _chat(test_client, "hello").json()["choices"][0]["message"]["content"]
    classifier = Classifier("voice", ("safe", "unsafe"), frozenset({"unsafe"}), 0.5, None, True)
    prompt_unsafe, answer_unsafe = (
        test_client.portal.call(guardrails.classify, classifier, text)[1]  # type: ignore[union-attr]
        for text in ("hello", answer)
    )
    # block on whichever label the answer scores higher on than the prompt: the prompt passes, the answer not
    label, prompt_p, answer_p = (
        ("unsafe", prompt_unsafe, answer_unsafe) if answer_unsafe > prompt_unsafe
        else ("safe", 1 - prompt_unsafe, 1 - answer_unsafe)
    )  # fmt: skip
    _put(test_client, "base", {"classifier": {"adapter": "voice", "labels": ["safe", "unsafe"], "blocked_labels": [label],
                                              "threshold": (prompt_p + answer_p) / 2, "answers": True}})  # fmt: skip
    try:
        choice = _chat(test_client, "hello").json()["choices"][0]
        assert (choice["message"]["content"], choice["finish_reason"]) == ("", "content_filter")
        assert _streamed(test_client, "hello") == ("", "content_filter")  # nothing sent before the verdict
        assert [e["guard"] for e in _logged(test_client, "base", 2)[:2]] == ["classifier", "classifier"]
        _put(test_client, "base", {"classifier": {"adapter": "voice", "labels": ["safe", "unsafe"],
                                                  "blocked_labels": [label], "threshold": 1.0, "answers": True}})  # fmt: skip
        assert _chat(test_client, "hello").json()["choices"][0]["message"]["content"] == answer
        assert _streamed(test_client, "hello") == (answer, "length")  # sent whole, once classified
    finally:
        test_client.delete("/admin/guardrails/base")
