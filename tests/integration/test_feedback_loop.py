"""The loop from feedback to a new adapter version: the real server, answers and feedback through the
`openai` client and `/v1/feedback`, `tunesmith data from-feedback`, a DPO run from the served adapter,
registered as its next version."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2 as httpx
import openai
from typer.testing import CliRunner

from tests.conftest import free_port, start_uvicorn, write_jsonl
from tunesmith.cli import app
from tunesmith.config import ServeSpec, TrainSpec, default_database_url
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.serve.app import create_app
from tunesmith.train.sft import train_sft

QUESTIONS = [f"question {n}: {q}" for n, q in enumerate(
    ["what time do you open", "do you have oat milk", "is there wifi", "can I bring my dog", "where are you",
     "any vegan cakes", "how much is a latte", "do you sell beans", "are you open on sunday", "do you cater",
     "is there parking", "can I pay by card", "do you have decaf", "is the cafe quiet", "any gluten free bread",
     "do you deliver"]
)]  # fmt: skip


def test_feedback_becomes_a_dpo_run_registered_as_the_next_version(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    registry = Registry(default_database_url()).connect()
    data = write_jsonl(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "we open at eight"}]}
        for q in QUESTIONS
    ])  # fmt: skip
    spec = TrainSpec(model=str(tiny_model_dir), data=data, max_steps=4, batch_size=8, lr=3e-2, name="voice",
                     out=tmp_path / "sft-run", save_every=100, eval_every=100)  # fmt: skip
    sft = train_sft(spec, listener=registry.run_listener("voice"), progress=False)
    store = ServingStore(registry)
    assert store.register_source("voice", sft.run_id, tenant="acme").key == "voice@1"
    store.create_deployment("support", [{"model": "voice@1", "weight": 100}], tenant="acme")
    key = store.create_key("acme", admin=False)
    serve = ServeSpec(model=str(tiny_model_dir), port=free_port(), max_wait_ms=5)
    server, thread = start_uvicorn(create_app(serve, registry), serve.host, serve.port)
    try:
        url = f"http://{serve.host}:{serve.port}"
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        for index, question in enumerate(QUESTIONS):
            messages = [{"role": "user", "content": question}]
            first, second = (
                client.chat.completions.create(
                    model="support", messages=messages, max_tokens=12, temperature=1.0
                )
                for _ in range(2)
            )
            feedback = [{"response_id": first.id, "preferred_over": second.id}]  # a DPO pair
            if index % 4 == 0:
                feedback.append({"response_id": second.id, "correction": "We open at eight, every day."})
            feedback.append({"response_id": first.id, "thumbs": "up" if index % 2 else "down"})
            for body in feedback:
                assert http.post("/v1/feedback", json=body).status_code == 201
    finally:
        server.should_exit = True
        thread.join(30)

    runner = CliRunner()
    out = tmp_path / "feedback-data"
    built = runner.invoke(app, ["data", "from-feedback", "--deployment", "support", "--out", str(out),
                                "--model", str(tiny_model_dir), "--json"])  # fmt: skip
    assert built.exit_code == 0, built.output
    summary = json.loads(built.stdout)
    assert set(summary["datasets"]) == {"sft", "dpo", "kto"}
    rows = [json.loads(line) for split in ("train", "val", "test")
            for line in (out / "dpo" / f"{split}.jsonl").read_text().splitlines()]  # fmt: skip
    stored = {item["id"]: item for item in store.list_feedback()}
    for row in rows:  # every row links to the request and feedback it came from
        assert stored[row["source_ids"]["feedback_id"]]["response_id"] == row["source_ids"]["request_id"]
    assert len(rows) >= len(QUESTIONS) // 2  # dedup and the leakage check may take a few
    assert all("the same as the other" in line for line in summary["unused"]), summary["unused"]

    trained = runner.invoke(app, ["train", "--method", "dpo", "--data", str(out / "dpo"), "--init-adapter",
                                  sft.run_id, "--model", str(tiny_model_dir), "--max-steps", "2", "--name",
                                  "voice", "--json"])  # fmt: skip
    assert trained.exit_code == 0, trained.output
    run = json.loads(trained.stdout)
    assert run["data_hash"] == summary["datasets"]["dpo"]["hash"]
    assert store.find_adapter(store.authenticate(key), "voice", None).key == "voice@2"
