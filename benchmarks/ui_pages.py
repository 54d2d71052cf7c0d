"""Server time of the web console's heaviest pages on a large registry: no model, no browser.

One command:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ui_pages.py [--runs 1000] [--metrics 50]

Builds a SQLite registry in a temporary folder: `--runs` runs with `--metrics` metrics each (bulk
inserted; half of them owned by tenant acme through their adapters), 10 of them with a 1,000-step
metrics.jsonl on disk, and an evaluation of two models on 1,000 examples (tests/ui_registry.py's
shape). Then times each page through the app in-process (FastAPI's TestClient: the request, the
queries, the file reads and the template; no network), `--repeat` times after one warm-up request,
as admin and as the tenant (whose queries carry the ownership subquery). The evaluation page is also
timed cold (its example cache cleared before each request). Goals (issue 18): run list < 1 s, a 10-run
comparison < 2 s, an evaluation page of 1,000 examples < 500 ms. See benchmarks/RESULTS.md, "Web console".
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient

from tests.ui_registry import DATASET_ID, write_evaluation, write_run
from tunesmith.registry.models import AdapterRecord, DatasetRecord, RunRecord
from tunesmith.registry.serving import AdapterOwnerRecord
from tunesmith.registry.serving_store import ServingStore
from tunesmith.registry.store import Registry
from tunesmith.ui import examples
from tunesmith.ui.app import create_ui_app


def build(root: Path, runs: int, metrics: int) -> tuple[Registry, dict[str, str], list[str], int]:
    registry = Registry(f"sqlite:///{root / 'registry.db'}").connect()
    store = ServingStore(registry)
    keys = {"admin": store.create_key(None, admin=True), "acme": store.create_key("acme", admin=False)}
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with registry.session() as session, session.begin():
        session.add(DatasetRecord(id=DATASET_ID, path=str(root / "data"), rows=1000, lineage=None))
        session.add(AdapterOwnerRecord(name="acme-bulk", tenant="acme"))  # the tenant exists: its key made it
        for index in range(runs):
            run_id = f"run-bulk-{index:05d}"
            values = {f"metric_{m:02d}": (index * 0.37 + m * 0.11) % 1 for m in range(metrics - 2)}
            session.add(RunRecord(
                id=run_id, status=("succeeded", "failed", "running")[index % 3], method="lora",
                base_model=("smollm2-135m", "qwen2.5-0.5b")[index % 2], run_dir=str(root / "runs" / run_id),
                config={"model": "smollm2-135m", "lr": 1e-4 * (1 + index % 7), "lora": {"r": 8}},
                dataset_id=DATASET_ID, trained_tokens=1000 * index, wall_seconds=60.0,
                metrics={"train_loss": 2 - index / runs, "val_loss": 2.1 - index / runs, **values},
                created_at=start + timedelta(minutes=index),
            ))  # fmt: skip
            if index % 2 == 0:
                session.add(AdapterRecord(name="acme-bulk", version=index // 2 + 1, run_id=run_id,
                                          path=str(root / run_id), base_model="smollm2-135m"))  # fmt: skip
    compared = [write_run(registry, root / "runs-on-disk", f"run-curve-{i}", steps=1000, lr=1e-5 * (i + 1),
                          adapter="acme-curves") for i in range(10)]  # fmt: skip
    for run_id in compared:
        store.register_adapter("acme-curves", root / "runs-on-disk" / run_id / "adapter", "tiny", tenant="acme",
                               run_id=run_id)  # fmt: skip
    evaluation = write_evaluation(registry, root, compared[-1], examples=1000)
    return registry, keys, compared, evaluation


def signed_in(app: object, key: str) -> TestClient:
    client = TestClient(app)  # type: ignore[arg-type]
    login = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)  # type: ignore[union-attr]
    assert client.post("/login", data={"csrf_token": token, "key": key}).url.path == "/runs"
    return client


def timed(client: TestClient, path: str, repeat: int, cold: bool = False) -> dict[str, float]:
    times = []
    for attempt in range(repeat + (0 if cold else 1)):
        if cold:
            examples._cache.clear()
        started = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, (path, response.status_code)
        if cold or attempt > 0:
            times.append(elapsed * 1000)
    return {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--metrics", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        registry, keys, compared, evaluation = build(root, args.runs, args.metrics)
        print(f"registry built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        app = create_ui_app(registry, secret_path=root / "secret")
        compare = "/runs/compare?" + "&".join(f"run={run_id}" for run_id in compared)
        pages = {
            "run list (newest first)": "/runs",
            "run list sorted by val_loss": "/runs?sort=val_loss&order=asc",
            "run list filtered by text, page 2": "/runs?q=bulk-00&page=2",
            "compare 10 runs (1,000 steps each)": compare,
            "evaluation, 1,000 examples, worst first": f"/evaluations/{evaluation}",
            "evaluation, 1,000 examples, page 40": f"/evaluations/{evaluation}?order=best&page=40",
        }
        results = []
        for who in ("admin", "acme"):
            client = signed_in(app, keys[who])
            for name, path in pages.items():
                results.append({"viewer": who, "page": name, **timed(client, path, args.repeat)})
            results.append({"viewer": who, "page": "evaluation, cold (file read and scored)",
                            **timed(client, pages["evaluation, 1,000 examples, worst first"], 3, cold=True)})  # fmt: skip
    for row in results:
        print(json.dumps(row))
    print(f"\n{'viewer':<7} {'page':<44} {'median ms':>10} {'max ms':>8}")
    for row in results:
        print(f"{row['viewer']:<7} {row['page']:<44} {row['median_ms']:>10} {row['max_ms']:>8}")


if __name__ == "__main__":
    main()
