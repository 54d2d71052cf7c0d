"""The real server (uvicorn on a free local port) with two adapters trained on the tiny model, driven by
the official `openai` client: adapters, streaming, A/B deployments, feedback, tenants, bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx  # the HTTP client the openai package is built on
import openai
import pytest
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, start_uvicorn, write_jsonl
from tests.unit.serve.conftest import make_adapter
from tunesmith.config import ServeSpec, TrainSpec
from tunesmith.monitor.ab import load_ab_report
from tunesmith.registry.serving_store import Caller, ServingStore, choose_variant
from tunesmith.registry.store import Registry
from tunesmith.serve.app import create_app
from tunesmith.train.sft import train_sft

QUESTIONS = ["what time do you open", "do you have oat milk", "is there wifi", "can I bring my dog",
             "where are you", "hello", "any vegan cakes", "how much is a latte"]  # fmt: skip
HELLO = [{"role": "user", "content": "hello"}]


@dataclass
class Server:
    url: str
    store: ServingStore
    keys: dict[str, str]
    uvicorn: uvicorn.Server
    thread: threading.Thread

    def client(self, who: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=self.keys[who], max_retries=0, timeout=60)

    def http(self, who: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.keys[who]}"}, timeout=60
        )


def start_server(spec: ServeSpec, registry: Registry, keys: dict[str, str]) -> Server:
    server, thread = start_uvicorn(create_app(spec, registry), spec.host, spec.port)
    return Server(f"http://{spec.host}:{spec.port}", ServingStore(registry), keys, server, thread)


def stop_server(server: Server) -> None:
    server.uvicorn.should_exit = True
    server.thread.join(30)


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, dict[str, str]]:
    """A registry with two trained versions of acme's `voice`, globex's `secret`, a deployment and keys."""
    root = tmp_path_factory.mktemp("serve")
    registry = Registry(f"sqlite:///{root / 'registry.db'}").connect()
    for reply in ("ahoy matey, the coffee be hot", "we open at eight every day"):  # voice@1, voice@2
        data = write_jsonl(root / f"{reply[:4]}.jsonl", [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": reply}]} for q in QUESTIONS
        ])  # fmt: skip
        spec = TrainSpec(model=str(tiny_model_dir), data=data, max_steps=8, batch_size=8, lr=3e-2, name="voice",
                         out=root / f"run-{reply[:4]}", warmup_ratio=0.0, save_every=100, eval_every=100)  # fmt: skip
        result = train_sft(spec, listener=registry.run_listener("voice"), progress=False)
    store = ServingStore(registry)
    assert store.register_source("voice", result.run_id, tenant="acme").key == "voice@2"  # by run id
    globex = make_adapter(tiny_model_dir, root / "globex-adapter", seed=5)
    store.register_source("secret", str(globex), tenant="globex")
    store.create_deployment("acme-voice", [{"model": "voice@1", "weight": 75}, {"model": "voice@2", "weight": 25}],
                            tenant="acme")  # fmt: skip
    keys = {
        "acme": store.create_key("acme", admin=False),
        "globex": store.create_key("globex", admin=False),
        "admin": store.create_key(None, admin=True),
    }
    return registry, keys


def _serve(tiny_model_dir: Path, served: tuple[Registry, dict[str, str]], engine: str) -> Iterator[Server]:
    spec = ServeSpec(model=str(tiny_model_dir), port=free_port(), max_wait_ms=20, max_batch_size=16,
                     max_loaded_adapters=4, max_request_bytes=50_000, engine=engine)  # fmt: skip
    running = start_server(spec, *served)
    yield running
    stop_server(running)


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, served: tuple[Registry, dict[str, str]]) -> Iterator[Server]:
    """The server on the embedded engine."""
    yield from _serve(tiny_model_dir, served, "embedded")


@pytest.fixture(scope="module")
def vllm_server(tiny_model_dir: Path, served: tuple[Registry, dict[str, str]]) -> Iterator[Server]:
    """The same registry served by vLLM (a GPU with vLLM installed)."""
    yield from _serve(tiny_model_dir, served, "vllm")


VLLM_READY = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.fixture(params=[
    "embedded",
    pytest.param("vllm", marks=pytest.mark.skipif(not VLLM_READY, reason="--engine vllm needs vLLM "
                                                  "(pip install 'tunesmith[vllm]') and a CUDA GPU")),
])  # fmt: skip
def any_server(request: pytest.FixtureRequest) -> Server:
    """The core API tests run on either engine: the same requests, the same answers' shape."""
    return request.getfixturevalue("server" if request.param == "embedded" else "vllm_server")  # type: ignore[no-any-return]


def test_models_list_shows_base_and_only_the_callers_adapters_and_deployments(server: Server) -> None:
    acme = {model.id for model in server.client("acme").models.list()}
    globex = {model.id for model in server.client("globex").models.list()}
    assert acme == {"base", "voice", "acme-voice"}
    assert globex == {"base", "secret"}


def test_two_adapters_answer_differently_and_say_which_answered(any_server: Server) -> None:
    client = any_server.client("acme")
    answers = {}
    for model in ("voice@1", "voice@2", "base"):
        raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=8,
                                                                temperature=0)  # fmt: skip
        completion = raw.parse()
        assert completion.model == model and raw.headers["x-tunesmith-variant"] == model
        assert completion.usage is not None and completion.usage.completion_tokens > 0
        assert (
            completion.usage.total_tokens
            == completion.usage.prompt_tokens + completion.usage.completion_tokens
        )
        answers[model] = completion.choices[0].message.content
    assert len(set(answers.values())) == 3, answers
    latest = client.chat.completions.create(model="voice", messages=HELLO, max_tokens=8, temperature=0)
    assert latest.model == "voice@2" and latest.choices[0].message.content == answers["voice@2"]


def test_streaming_sends_the_same_text_token_by_token(any_server: Server) -> None:
    client = any_server.client("acme")
    whole = client.chat.completions.create(model="voice@1", messages=HELLO, max_tokens=12, temperature=0)
    chunks = list(client.chat.completions.create(model="voice@1", messages=HELLO, max_tokens=12, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 2  # several deltas, not one
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    )  # type: ignore[union-attr]
    assert {c.model for c in chunks} == {"voice@1"}


def test_completions_with_n_seed_and_stop(any_server: Server) -> None:
    client = any_server.client("acme")
    first = client.completions.create(
        model="voice@2", prompt="we open", max_tokens=10, n=2, seed=7, temperature=1
    )
    again = client.completions.create(
        model="voice@2", prompt="we open", max_tokens=10, n=2, seed=7, temperature=1
    )
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1]
    text = first.choices[0].text
    stop = text[3:5]
    stopped = client.completions.create(model="voice@2", prompt="we open", max_tokens=10, seed=7, temperature=1,
                                        stop=[stop])  # fmt: skip
    assert stopped.choices[0].text == text[: text.index(stop)] and stopped.choices[0].finish_reason == "stop"


def test_ab_assignment_is_sticky_follows_weights_and_is_recorded(server: Server) -> None:
    client = server.client("acme")

    def ask(user: str) -> tuple[str, str, str]:
        raw = client.chat.completions.with_raw_response.create(model="acme-voice", messages=HELLO, max_tokens=1,
                                                                user=user)  # fmt: skip
        completion = raw.parse()
        assert raw.headers["x-tunesmith-deployment"] == "acme-voice"
        return user, completion.model, completion.id

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, [f"user-{i}" for i in range(200)] + [f"user-{i}" for i in range(20)]))
    by_user: dict[str, set[str]] = {}
    for user, model, _ in answers:
        by_user.setdefault(user, set()).add(model)
    assert all(len(models) == 1 for models in by_user.values())  # sticky
    share = sum(1 for models in by_user.values() if models == {"voice@2"}) / len(by_user)
    assert 0.15 < share < 0.35  # weight 25
    variants = [{"model": "voice@1", "weight": 75}, {"model": "voice@2", "weight": 25}]
    assert all(models == {choose_variant("acme-voice", user, variants)} for user, models in by_user.items())
    logged = server.http("admin").get(f"/admin/requests/{answers[0][2]}").json()
    assert (logged["deployment"], logged["variant"], logged["user"]) == (
        "acme-voice",
        answers[0][1],
        "user-0",
    )

    admin = server.http("admin")
    assert admin.post("/admin/deployments/acme-voice/promote", json={"model": "voice@2"}).status_code == 200
    assert {ask(f"user-{i}")[1] for i in range(10)} == {"voice@2"}
    rolled = admin.post("/admin/deployments/acme-voice/rollback").json()
    assert [c["action"] for c in rolled["history"]] == ["create", "promote", "rollback"]
    assert all(ask(f"user-{i}")[1] == choose_variant("acme-voice", f"user-{i}", variants) for i in range(10))


def test_feedback_round_trips_into_the_registry(server: Server) -> None:
    client = server.client("acme")
    good = client.chat.completions.create(model="voice@1", messages=HELLO, max_tokens=4)
    bad = client.chat.completions.create(model="voice@2", messages=HELLO, max_tokens=4)
    http = server.http("acme")
    assert http.post("/v1/feedback", json={"response_id": bad.id, "thumbs": "down",
                                           "correction": "Ahoy! Coffee's on."}).status_code == 201  # fmt: skip
    assert http.post("/v1/feedback", json={"response_id": good.id, "rating": 4, "comment": "nice",
                                           "preferred_over": bad.id}).status_code == 201  # fmt: skip
    stored = server.store.list_feedback()
    assert [(f["response_id"], f["rating"], f["thumbs"], f["correction"], f["preferred_over"]) for f in stored] == [
        (bad.id, 1, "down", "Ahoy! Coffee's on.", None), (good.id, 4, None, None, bad.id)
    ]  # fmt: skip
    logged = server.http("admin").get(f"/admin/requests/{good.id}").json()
    assert logged["prompt"]["messages"] == HELLO and logged["outputs"] == [good.choices[0].message.content]
    assert logged["completion_tokens"] == good.usage.completion_tokens and logged["latency_ms"] > 0  # type: ignore[union-attr]
    assert (
        server.http("globex").post("/v1/feedback", json={"response_id": good.id, "rating": 1}).status_code
        == 404
    )
    assert http.post("/v1/feedback", json={"response_id": good.id}).status_code == 400  # nothing given
    ranked = {"response_id": good.id, "ranking": [good.id, bad.id]}
    assert http.post("/v1/feedback", json=ranked).status_code == 201
    assert server.store.list_feedback(good.id)[-1]["ranking"] == [good.id, bad.id]
    for ranking in ([good.id, good.id], [bad.id, "chatcmpl-other"]):
        refused = http.post("/v1/feedback", json={"response_id": good.id, "ranking": ranking})
        assert refused.status_code == 400 and "ranking" in refused.json()["error"]["message"]
    foreign = server.client("globex").chat.completions.create(model="base", messages=HELLO, max_tokens=2)
    assert (
        http.post("/v1/feedback", json={"response_id": good.id, "ranking": [good.id, foreign.id]}).status_code
        == 404
    )


def test_outcome_events_reach_the_ab_report(server: Server) -> None:
    client, http = server.client("acme"), server.http("acme")
    served = [
        client.chat.completions.create(model="acme-voice", user=f"customer-{i}", messages=HELLO, max_tokens=2)
        for i in range(8)
    ]
    for completion in served[:3]:
        assert (
            http.post("/v1/events", json={"response_id": completion.id, "name": "click"}).status_code == 201
        )
    assert http.post("/v1/feedback", json={"response_id": served[0].id, "thumbs": "up"}).status_code == 201
    foreign = server.http("globex").post("/v1/events", json={"response_id": served[0].id, "name": "click"})
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "response_not_found"
    report = load_ab_report(server.store.registry, "acme-voice")
    by_model = {variant["model"]: variant for variant in report["variants"]}
    assert sum(variant["requests"] for variant in by_model.values()) >= 8  # earlier tests add their own
    assert sum(variant["outcomes"]["click"]["n"] * variant["outcomes"]["click"]["rate"]
               for variant in by_model.values()) == pytest.approx(3)  # fmt: skip
    assert report["control"] == "voice@1" and "thumbs" in by_model["voice@2"]["versus_control"]


def test_tenants_cannot_see_or_call_each_others_models(any_server: Server) -> None:
    for who, model in (
        ("globex", "voice"),
        ("globex", "voice@1"),
        ("globex", "acme-voice"),
        ("acme", "secret"),
    ):
        with pytest.raises(openai.NotFoundError, match="does not exist or you do not have access"):
            any_server.client(who).chat.completions.create(model=model, messages=HELLO, max_tokens=2)
    assert (
        any_server.client("globex")
        .chat.completions.create(model="secret", messages=HELLO, max_tokens=2)
        .choices
    )
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{any_server.url}/v1", api_key="ts-wrong", max_retries=0).models.list()
    assert httpx.get(f"{any_server.url}/v1/models").status_code == 401
    assert any_server.http("acme").get("/admin/deployments").status_code == 403


def _error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return response.status_code, body["message"]


def test_bad_input_gets_a_4xx_naming_the_problem(server: Server) -> None:
    http = server.http("acme")
    chat = "/v1/chat/completions"
    raw = http.post(
        chat, content=b'{"model": "voice", "messages": [', headers={"content-type": "application/json"}
    )
    assert _error(raw) == (400, "malformed JSON in the request body")
    cases = {
        "unknown model": ({"model": "nope", "messages": HELLO}, 404, "nope"),
        "max_tokens": ({"model": "voice", "messages": HELLO, "max_tokens": 5000}, 400, "limit of 1024"),
        "context": ({"model": "voice", "messages": [{"role": "user", "content": "oat milk " * 600}]}, 400,
                    "maximum context length is 1024"),
        "empty": ({"model": "voice", "messages": []}, 400, "messages"),
        "role": ({"model": "voice", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
        "no user": ({"model": "voice", "messages": [{"role": "system", "content": "hi"}]}, 400, "role 'user'"),
        "temperature": ({"model": "voice", "messages": HELLO, "temperature": 9}, 400, "temperature"),
        "unknown field": ({"model": "voice", "messages": HELLO, "logprobs": True}, 400, "logprobs"),
        "too large": ({"model": "voice", "messages": [{"role": "user", "content": "x" * 60_000}]}, 413, "limit"),
    }  # fmt: skip
    for name, (body, status, words) in cases.items():
        code, message = _error(http.post(chat, json=body))
        assert code == status and words in message, (name, code, message)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        server.client("acme").completions.create(model="voice", prompt="milk " * 1100)


def test_mismatched_adapter_is_refused_never_served_as_base(any_server: Server, tmp_path: Path) -> None:
    trained = any_server.store.find_adapter(Caller(None, is_admin=True), "voice", 1)
    foreign = Path(shutil.copytree(trained.path, tmp_path / "foreign"))
    config = json.loads((foreign / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-360M-Instruct"
    (foreign / "adapter_config.json").write_text(json.dumps(config))
    any_server.store.register_source("foreign", str(foreign), tenant="acme")
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError, match="trained on base model 'HuggingFaceTB/SmolLM2-360M"):
            any_server.client("acme").chat.completions.create(model="foreign", messages=HELLO, max_tokens=2,
                                                          stream=stream)  # fmt: skip
    code, message = _error(any_server.http("admin").post("/admin/adapters/load", json={"model": "foreign"}))
    assert code == 400 and "trained on base model" in message
    loaded = any_server.http("admin").post("/admin/adapters/load", json={"model": "voice@1"}).json()["loaded"]
    assert "voice@1" in loaded and "foreign@1" not in loaded


def _requests(metrics: str, status: str) -> float:
    """voice@1's chat requests counted with `status` on a /metrics page (0 before the first)."""
    labels = {"endpoint": "chat", "status": status, "variant": "voice@1"}
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "tunesmith_requests_total" and sample.labels == labels:
                return sample.value
    return 0.0


def test_client_disconnect_mid_stream_frees_its_slot(server: Server) -> None:
    admin, http = server.http("admin"), server.http("acme")
    before = admin.get("/metrics").text
    finished = {"model": "voice@1", "messages": HELLO, "max_tokens": 4, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=finished) as response:
        assert [line for line in response.iter_lines() if line][-1] == "data: [DONE]"
    # seed 1 decodes ~580 tokens on the tiny model, so it is still generating when its client leaves
    body = {
        "model": "voice@1",
        "messages": HELLO,
        "max_tokens": 1000,
        "temperature": 1.0,
        "seed": 1,
        "stream": True,
    }
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        next(lines), next(lines)  # generation is under way
        assert http.get("/health").json()["running"] >= 1
    deadline = time.monotonic() + 10
    while http.get("/health").json()["running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    health = http.get("/health").json()
    assert health["running"] == 0 and health["queued"] == 0
    metrics = admin.get("/metrics").text
    assert _requests(metrics, "200") == _requests(before, "200") + 1  # the stream read to its end
    assert _requests(metrics, "499") == _requests(before, "499") + 1  # the one whose client left
    assert (
        "tunesmith_batch_size_bucket" in metrics and "tunesmith_time_to_first_token_seconds_bucket" in metrics
    )


def test_shutdown_finishes_in_flight_requests(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}").connect()
    spec = ServeSpec(model=str(tiny_model_dir), port=free_port(), auth=False)
    app = create_app(spec, registry)
    engine = app.state.service.engine
    forward, shutting_down = engine._forward, threading.Event()

    def held(*args: Any, **kwargs: Any) -> Any:  # the request stays in flight until shutdown has begun
        shutting_down.wait(60)
        return forward(*args, **kwargs)

    monkeypatch.setattr(engine, "_forward", held)
    uvicorn_server, thread = start_uvicorn(app, spec.host, spec.port)
    server = Server(f"http://{spec.host}:{spec.port}", ServingStore(registry), {"anyone": "unused"},
                    uvicorn_server, thread)  # fmt: skip
    client = server.client("anyone")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(client.chat.completions.create, model="base", messages=HELLO, max_tokens=300,
                              temperature=1.0, seed=0)  # fmt: skip
        http, deadline = server.http("anyone"), time.monotonic() + 60
        while not http.get("/health").json()["running"]:  # running from its prefill on
            assert time.monotonic() < deadline and not pending.done(), "the request never showed as running"
            time.sleep(0.02)
        server.uvicorn.should_exit = True  # what SIGINT/SIGTERM do
        while True:  # the server has stopped taking connections, the request still in flight
            try:
                httpx.get(f"{server.url}/health", timeout=5)
            except httpx.ConnectError:
                break
            assert time.monotonic() < deadline and not pending.done(), (
                "the server did not begin shutting down"
            )
            time.sleep(0.02)
        shutting_down.set()
        completion = pending.result(timeout=60)
    server.thread.join(30)
    assert not server.thread.is_alive()
    assert (
        completion.choices[0].finish_reason in {"length", "stop"} and completion.usage.completion_tokens > 1
    )  # type: ignore[union-attr]
