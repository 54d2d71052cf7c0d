"""The improvement loop end to end through the real server: a topic shift, a drift alert, three cycles.

One command:  .venv/bin/python benchmarks/loop_end_to_end.py [--model smollm2-135m-instruct] [--json-out FILE]

The scenario of tests/integration/test_loop.py, but every answer and every piece of feedback goes through
a real uvicorn server (`create_app`: /v1/chat/completions, /v1/feedback), whose request log is what
`monitor_deployment` and `run_loop` read. The champion learned three topics (opening hours, wifi,
parking; one answer each). Production first asks about them (a monitor pass: no drift expected), then
about delivery; users thumb those answers down and correct a share of them ("yes, delivery daily"); the
next monitor pass raises an `input_drift` alert, which triggers the first cycle (the policy: `on_alert`
only). Before cycles 2 and 3 more delivery traffic arrives and the monitor alerts again. Cycle 1's
candidate is trained on shuffled answers and should be blocked at the gate; cycles 2 and 3 train good
ones. In the canaries, simulated users thumb each answer up at a fixed rate per variant (the candidate
loses in cycle 2, wins in cycle 3); `loop run` is called after each batch of traffic, as cron would.
Prints the timeline (each step's wall time and figures) and the registry's views (`tunesmith runs list`,
`loop status`, `runs show`, `deploy show`, `monitor alerts`, `audit verify`); writes it all as JSON.

Model: a tiny random Llama built here (the test suite's), or `--model DIR|NAME`; the embedded model
(`smollm2-135m-instruct`) reads its one-time conversion from `--model-cache` (default the checkout's
.cache/test-models, as tests/conftest.py `embedded_model_home`; without one it converts it, once per run).
Any other `--model` gets the embedded model's training settings (`SETTINGS`). See benchmarks/RESULTS.md, "The
improvement loop end to end".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.serve_abuse import build_tiny_model  # noqa: E402
from tests.conftest import free_port, start_uvicorn, write_jsonl  # noqa: E402

# Each topic: the questions production asks, held-out questions for the frozen test set, and the answer.
TOPICS = {
    "hours": (["what time do you open", "when do you open", "opening hours please", "are you open early",
               "what are your hours", "when does the cafe open", "hours on monday", "hours on friday"],
              ["tell me your opening time", "what are the hours on sunday", "is the cafe open at seven",
               "your hours tomorrow", "what time do doors open", "open early on tuesday"],
              "we open at eight"),
    "wifi": (["is there wifi", "do you have wifi", "wifi password please", "can I use the internet",
              "is the wifi free", "how fast is your wifi", "wifi for laptops", "internet access here"],
             ["is the wifi any good", "wifi on the terrace", "free internet for customers",
              "what is the wifi called", "do guests get wifi", "can I use your internet for work"],
             "free wifi, ask at the till"),
    "parking": (["is there parking", "where can I park", "do you have a car park", "parking nearby",
                 "is parking free", "can I park outside", "bike parking", "parking on saturday"],
                ["where do I park my car", "any parking spaces", "parking for my van",
                 "can I park at the door", "where to park a bicycle", "is there parking on sunday"],
                "park behind the bakery"),
    "delivery": (["do you deliver", "can you deliver to me", "delivery to my office", "is delivery free",
                  "how fast is delivery", "deliver on weekends", "delivery area", "can I get delivery",
                  "delivery tonight", "do you deliver cakes", "delivery by bike", "any delivery fee"],
                 ["deliver an order to my flat", "delivery to my house", "deliveries to the station",
                  "can you deliver my order", "deliver a box of pastries", "delivery to the school"],
                 "yes, delivery daily"),
}  # fmt: skip
DESIGNED = ("blocked", "rolled_back", "promoted")  # how the three cycles should end
ON_TOPIC = ["hours", "wifi", "parking"]  # what the champion learned; production then asks about delivery
NAMES = ["Oscar", "Dev", "Aisha", "Mei", "Tom", "Ines", "Sam", "Noor"]
SETTINGS = {  # per model: the champion's training (the candidates inherit it) and the candidates' steps
    "tiny": {"lr": 1e-2, "batch_size": 8, "champion_steps": 200, "candidate_steps": 150},
    "embedded": {"lr": 2e-3, "batch_size": 4, "champion_steps": 30, "candidate_steps": 40},
}


def _chat(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _asked(topics: list[str], count: int, seed: int) -> list[tuple[str, str]]:
    """`count` production prompts on `topics`, each with its right answer: a question, sometimes signed
    with a name, as customers write."""
    rng = random.Random(seed)
    asked = []
    for _ in range(count):
        questions, _, answer = TOPICS[rng.choice(topics)]
        asked.append((rng.choice(questions) + rng.choice(["", "?", f", thanks {rng.choice(NAMES)}"]), answer))
    return asked


class Timeline:
    """Steps with their wall time and figures, printed as they finish."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.start = time.perf_counter()

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        figures: dict[str, Any] = {}
        began = time.perf_counter()
        yield figures
        seconds = time.perf_counter() - began
        self.steps.append({"step": name, "seconds": round(seconds, 2), **figures})
        shown = "; ".join(f"{key}={value}" for key, value in figures.items())
        print(f"[{time.perf_counter() - self.start:7.1f}s] {name:<42} {seconds:7.1f}s  {shown}", flush=True)


class Production:
    """Customers of tenant acme talking to deployment `support` through the server."""

    def __init__(self, base_url: str, key: str, max_tokens: int) -> None:
        self.http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=300)
        self.max_tokens = max_tokens

    def ask(self, question: str, user: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": "support", "messages": [{"role": "user", "content": question}],
                                "max_tokens": self.max_tokens, "temperature": 0.0}  # fmt: skip
        if user is not None:
            body["user"] = user
        response = self.http.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        answer = response.json()
        return {
            "id": answer["id"],
            "variant": answer["model"],
            "answer": answer["choices"][0]["message"]["content"],
        }

    def ask_all(self, questions: list[str], users: list[str | None]) -> list[dict[str, Any]]:
        with ThreadPoolExecutor(4) as pool:  # concurrent, so the engine batches them
            return list(pool.map(self.ask, questions, users))

    def feedback(self, response_id: str, **fields: Any) -> None:
        self.http.post("/v1/feedback", json={"response_id": response_id, **fields}).raise_for_status()


def _monitor(registry: Any, window: int, figures: dict[str, Any]) -> None:
    from tunesmith.monitor.check import monitor_deployment

    report = monitor_deployment(registry, "support", window=window)
    figures["drift_p"] = {
        test["against"].split(" (")[0]: round(test["p_value"], 4) for test in report["drift"]
    }
    figures["alerts"] = sorted({alert["kind"] for alert in report["alerts"]}) or "none"


def _cycle_steps(registry: Any, loop_id: int) -> list[dict[str, Any]]:
    """The cycle's states with the wall time of the step that reached each (from the history's times)."""
    from datetime import datetime

    from tunesmith.loop.run import loop_status

    history = loop_status(registry, loop_id=loop_id)[0]["history"]
    steps, previous = [], None
    for event in history:
        at = datetime.fromisoformat(event["at"])
        steps.append({"state": event["state"], "seconds": round((at - previous).total_seconds(), 1) if previous
                      else 0.0, "message": event["message"]})  # fmt: skip
        previous = at
    return steps


def _gate_figures(cycle: Any) -> dict[str, Any]:
    gated = cycle.lineage.get("gated") or cycle.lineage.get("blocked") or {}
    return {"checks": [check["line"] for check in gated.get("checks", [])]}


def _shuffled(real: Any) -> Any:
    """`training_rows` with the answers shuffled between rows: a deliberately bad candidate."""

    def rows(context: Any, feedback_id: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        made, sources = real(context, feedback_id)
        answers = [row["messages"][-1]["content"] for row in made]
        random.Random(0).shuffle(answers)
        return [
            _chat(row["messages"][0]["content"], answer) for row, answer in zip(made, answers, strict=True)
        ], sources

    return rows


def _policy(path: Path, frozen: Path, judge: str, candidate_steps: int, canary_weight: float) -> Any:
    from tunesmith.loop.policy import load_policy

    policy = {
        "trigger": {"on_alert": True, "min_feedback": None},
        "data": {"near_dup_threshold": None},
        "train": {"overrides": {"max_steps": candidate_steps}},
        "gate": {"metric": "rouge_l", "metrics": ["rouge_l", "rouge_1", "exact_match"], "tolerance": 0.05,
                 "frozen_test": str(frozen), "max_new_tokens": 8, "bootstrap_samples": 200,
                 "production_sample": 4, "judge": {"model": judge}},
        "canary": {"weight": canary_weight, "metric": "thumbs", "max_requests": 600},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return load_policy(path)


def _shift(production: Production, count: int, corrections: int, seed: int, figures: dict[str, Any]) -> None:
    """`count` delivery questions; the first `corrections` answers are thumbed down and corrected."""
    began = time.perf_counter()
    asked = _asked(["delivery"], count, seed)
    answered = production.ask_all([question for question, _ in asked], [None] * count)
    for item, (_, answer) in zip(answered[:corrections], asked, strict=False):
        production.feedback(item["id"], thumbs="down", correction=answer)
    figures.update(requests=count, corrections=corrections,
                   requests_per_s=round(count / (time.perf_counter() - began), 2))  # fmt: skip


def _loop(registry: Any, policy: Any, figures: dict[str, Any]) -> Any:
    from tunesmith.loop.run import run_loop

    outcome = run_loop(registry, "support", policy)
    assert outcome.cycle is not None, outcome.note
    figures.update(loop=outcome.cycle.id, state=outcome.cycle.state, note=outcome.note)
    return outcome.cycle


def _canary(
    timeline: Timeline, production: Production, registry: Any, policy: Any, label: str,
    rates: dict[str, float], batch: int, first_user: int,
) -> Any:  # fmt: skip
    """Batches of traffic, users thumbing answers up at their variant's rate, a `loop run` after each."""
    rng = random.Random(first_user)
    cycle = None
    for number in range(1, 9):
        with timeline.step(f"{label}: canary traffic {number}") as figures:
            users = [f"user-{first_user + number * batch + index}" for index in range(batch)]
            asked = _asked(list(TOPICS), batch, first_user + number)
            answered = production.ask_all([question for question, _ in asked], users)
            for item in answered:
                thumbs = "up" if rng.random() < rates[item["variant"]] else "down"
                production.feedback(item["id"], thumbs=thumbs)
            figures["served"] = {
                variant: sum(item["variant"] == variant for item in answered) for variant in rates
            }
        with timeline.step(f"{label}: loop run (watch canary)") as figures:
            cycle = _loop(registry, policy, figures)
        if cycle.state != "canary":
            return cycle
    return cycle


def _registry_views(env: dict[str, str], cycles: list[Any]) -> dict[str, str]:
    """What a person sees: `tunesmith runs`, `adapters`, `loop status`, each cycle's history and the
    run of each candidate (its dataset, its parent adapter)."""
    commands = {"runs list": ["runs", "list"], "adapters list": ["adapters", "list"],
                "deploy show support": ["deploy", "show", "support"], "monitor alerts": ["monitor", "alerts"],
                "audit verify": ["audit", "verify"],
                "loop status": ["loop", "status", "--deployment", "support"]}  # fmt: skip
    for cycle in cycles:
        commands[f"loop status {cycle.id}"] = ["loop", "status", str(cycle.id)]
        run_id = cycle.lineage["candidate_trained"]["run_id"]
        commands[f"runs show {run_id}"] = ["runs", "show", run_id]
    return {
        name: subprocess.run(
            [sys.executable, "-m", "tunesmith", *argv], env=env, capture_output=True, text=True, check=True
        ).stdout  # fmt: skip
        for name, argv in commands.items()
    }


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """The whole scenario; returns the timeline, the cycles and the registry's views."""
    from tunesmith.config import LoraSpec, ServeSpec, TrainSpec, default_database_url
    from tunesmith.loop import build
    from tunesmith.loop.run import loop_status
    from tunesmith.registry.serving_store import ServingStore
    from tunesmith.registry.store import Registry
    from tunesmith.serve.app import create_app
    from tunesmith.train.sft import train_sft

    settings = SETTINGS["tiny" if args.model is None else "embedded"]
    model = args.model or str(build_tiny_model(home / "tiny-model"))
    timeline = Timeline()
    registry = Registry(default_database_url()).connect()
    store = ServingStore(registry)
    with timeline.step("champion: train voice@1") as figures:
        rows = [_chat(question, answer) for question, answer in _asked(ON_TOPIC, 96, 0)]
        spec = TrainSpec(model=model, data=write_jsonl(home / "champion.jsonl", rows), max_steps=settings["champion_steps"],
                         batch_size=settings["batch_size"], lr=settings["lr"], lora=LoraSpec(dropout=0.0), hold_out_val=False,
                         save_every=1000, eval_every=1000, name="voice", out=home / "champion")  # fmt: skip
        champion = train_sft(spec, listener=registry.run_listener("voice"), progress=False)
        store.register_source("voice", champion.run_id, tenant="acme")
        store.create_deployment("support", [{"model": "voice@1", "weight": 100}], tenant="acme")
        figures.update(rows=len(rows), steps=settings["champion_steps"], run=champion.run_id)
    frozen_rows = [_chat(question, answer) for _, tests, answer in TOPICS.values() for question in tests]
    frozen = write_jsonl(home / "frozen.jsonl", frozen_rows)
    policy = _policy(home / "loop.yaml", frozen, model, settings["candidate_steps"], args.canary_weight)
    serve = ServeSpec(model=model, port=free_port(), max_wait_ms=5, threads=args.threads)
    with timeline.step("server: start") as figures:
        server, thread = start_uvicorn(create_app(serve, registry), serve.host, serve.port)
        figures["url"] = f"http://{serve.host}:{serve.port}"
    production = Production(f"http://{serve.host}:{serve.port}", store.create_key("acme", admin=False),
                            args.max_tokens)  # fmt: skip
    try:
        with timeline.step("traffic: on topic (hours, wifi, parking)") as figures:
            began = time.perf_counter()
            asked = _asked(ON_TOPIC, args.window, 1)
            answered = production.ask_all([question for question, _ in asked], [None] * args.window)
            for item in answered[::4]:
                production.feedback(item["id"], thumbs="up")
            figures.update(requests=args.window, requests_per_s=round(args.window / (time.perf_counter() - began), 2),
                           sample_answer=answered[0]["answer"])  # fmt: skip
        with timeline.step("monitor check 1") as figures:
            _monitor(registry, args.window, figures)
        with timeline.step("traffic: topic shifts (delivery)") as figures:
            _shift(production, args.window, args.corrections, 2, figures)
        with timeline.step("monitor check 2") as figures:
            _monitor(registry, args.window, figures)
        cycles = []
        real_rows = build.training_rows
        build.training_rows = _shuffled(real_rows)  # cycle 1: a deliberately bad candidate
        try:
            with timeline.step("cycle 1: loop run (shuffled answers)") as figures:
                cycles.append(_loop(registry, policy, figures))
                figures.update(_gate_figures(cycles[-1]))
        finally:
            build.training_rows = real_rows
        for number, rates in ((2, (0.8, 0.3)), (3, (0.4, 0.9))):
            with timeline.step(f"cycle {number}: more delivery traffic") as figures:
                _shift(production, args.window, args.corrections // 4, 10 + number, figures)
            with timeline.step(f"cycle {number}: monitor check") as figures:
                _monitor(registry, args.window, figures)
            with timeline.step(f"cycle {number}: loop run") as figures:
                cycle = _loop(registry, policy, figures)
                figures.update(_gate_figures(cycle))
            if cycle.state != "canary":  # the scenario went otherwise: recorded as it is
                cycles.append(cycle)
                continue
            champion_key = cycle.champion
            cycle = _canary(timeline, production, registry, policy, f"cycle {number}",
                            {champion_key: rates[0], str(cycle.candidate): rates[1]}, args.canary_batch,
                            1000 * number)  # fmt: skip
            cycles.append(cycle)
    finally:
        server.should_exit = True
        thread.join(60)
    env = {**os.environ, "TUNESMITH_HOME": str(home), "COLUMNS": "160"}
    return {
        "model": model, "threads": args.threads, "window": args.window, "max_tokens": args.max_tokens,
        "total_seconds": round(time.perf_counter() - timeline.start, 1), "timeline": timeline.steps,
        "as_designed": [cycle.state for cycle in cycles] == list(DESIGNED),
        "cycles": [{"id": c.id, "state": c.state, "candidate": c.candidate, "reason": c.reason,
                    "steps": _cycle_steps(registry, c.id), "lineage": c.lineage} for c in cycles],
        "loop_status": loop_status(registry, deployment="support"),
        "views": _registry_views(env, cycles),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="Base model (directory or catalog name); default: tiny."
    )
    parser.add_argument("--model-cache", type=Path, default=REPO / ".cache" / "test-models",
                        help="The models/ folder of TUNESMITH_HOME (the embedded model's conversion).")  # fmt: skip
    parser.add_argument("--window", type=int, default=60, help="Requests per monitor window and per shift.")
    parser.add_argument("--corrections", type=int, default=24, help="Corrected answers in the first shift.")
    parser.add_argument("--canary-weight", type=float, default=20, help="Percent of traffic to a candidate.")
    parser.add_argument("--canary-batch", type=int, default=80, help="Requests between canary `loop run`s.")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a busy CPU).")
    parser.add_argument("--home", type=Path, default=None, help="A new TUNESMITH_HOME kept for inspection "
                        "(`TUNESMITH_HOME=DIR tunesmith loop status`); default: a temporary one.")  # fmt: skip
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        home.mkdir(parents=True, exist_ok=True)
        os.environ["TUNESMITH_HOME"] = str(home)
        os.environ.pop("TUNESMITH_DATABASE_URL", None)
        if args.model_cache.is_dir():
            (home / "models").symlink_to(args.model_cache.resolve(), target_is_directory=True)
        import torch

        torch.set_num_threads(args.threads)
        result = run(args, home)
    for name, text in result["views"].items():
        print(f"\n$ tunesmith {name}\n{text}")
    ended = ", ".join(cycle["state"] for cycle in result["cycles"])
    print(f"total {result['total_seconds']}s; the cycles ended {ended} (designed: {', '.join(DESIGNED)})")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
