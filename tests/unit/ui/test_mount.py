"""`tunesmith serve --ui`: the same console mounted at /ui, its links and cookie under /ui."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from tests.ui_registry import fill
from tunesmith.config import ServeSpec
from tunesmith.serve.app import create_app


def test_serve_mounts_the_console_at_ui(tiny_model_dir: Path, tmp_path: Path) -> None:
    filled = fill(tmp_path)
    client = TestClient(create_app(ServeSpec(model=str(tiny_model_dir), ui=True), filled.registry))
    login = client.get("/ui/runs")
    assert login.url.path == "/ui/login"
    assert 'href="/ui/static/ui.css"' in login.text and 'action="/ui/login"' in login.text
    assert [cookie.path for cookie in client.cookies.jar] == ["/ui"]
    assert client.get("/ui/static/ui.js").status_code == 200
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)  # type: ignore[union-attr]
    page = client.post("/ui/login", data={"csrf_token": csrf, "key": filled.keys["acme"]})
    assert page.url.path == "/ui/runs" and filled.runs["acme"][0] in page.text
    assert f'href="/ui/runs/{filled.runs["acme"][0]}"' in page.text
    assert client.get("/v1/models").status_code == 401  # the API keeps its own auth: no cookie sign-in
