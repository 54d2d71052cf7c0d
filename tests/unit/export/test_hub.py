"""The hub export through huggingface_hub's real client, up to the commit call (a mock transport answers)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import huggingface_hub
import pytest

from tunesmith.export.core import export_to_hub
from tunesmith.export.parity import demo_chats


@pytest.fixture
def fake_hub() -> Iterator[list[tuple[str, str, Any]]]:
    """Every request huggingface_hub makes, answered as the Hub would for a new repository."""
    requests: list[tuple[str, str, Any]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        requests.append((request.method, path, request.content))
        if path == "/api/repos/create":
            return httpx2.Response(200, json={"url": "http://hub.test/me/tuned", "name": "me/tuned"})
        if "/preupload/" in path:
            files = json.loads(request.content)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if "/commit/" in path:
            return httpx2.Response(
                200, json={"commitUrl": "http://hub.test/me/tuned/commit/1", "commitOid": "1"}
            )
        return httpx2.Response(404, json={"error": f"not faked: {path}"})

    huggingface_hub.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler)))
    yield requests
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


def test_hub_export_commits_the_merged_folder(
    tiny_adapter_dir: Path, tmp_path: Path, fake_hub: list[tuple[str, str, Any]]
) -> None:
    result = export_to_hub(
        tiny_adapter_dir, "me/tuned", tmp_path / "merged", force=False, chats=demo_chats(), prompt_count=3,
        dtype="float32", token="hf_test", private=True, endpoint="http://hub.test",
    )  # fmt: skip
    assert result.parity["hub"]["commit"] == "http://hub.test/me/tuned/commit/1"
    create = next(json.loads(body) for method, path, body in fake_hub if path == "/api/repos/create")
    assert create["name"] == "tuned" and create["organization"] == "me" and create["visibility"] == "private"
    commit = next(body for method, path, body in fake_hub if path == "/api/models/me/tuned/commit/main")
    lines = [json.loads(line) for line in commit.decode().splitlines()]
    files = {line["value"]["path"]: line["value"]["content"] for line in lines if line["key"] == "file"}
    assert {"model.safetensors", "config.json", "tokenizer.json", "parity.json"} <= set(files)
    assert json.loads(base64.b64decode(files["parity.json"]))["merged_logits"]["prompts"] == 3
