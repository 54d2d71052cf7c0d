"""Model resolution: a catalog name and its cache directory resolve to the same path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tunesmith.models import loading


def test_an_embedded_model_under_a_symlinked_cache_resolves_as_its_directory_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "cache" / "tiny"
    real.mkdir(parents=True)
    (real / "config.json").write_text("{}", encoding="utf-8")
    (tmp_path / "models").symlink_to(tmp_path / "cache", target_is_directory=True)
    entry = SimpleNamespace(source="embedded", cache_dir=lambda: tmp_path / "models" / "tiny")
    monkeypatch.setattr(loading, "find_model", lambda name: entry if name == "tiny" else None)
    # an adapter records the directory it was trained on; the server compares it with the name it serves
    assert (
        loading.resolve_model("tiny") == loading.resolve_model(str(tmp_path / "models" / "tiny")) == str(real)
    )
