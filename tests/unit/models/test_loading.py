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


def test_a_conversion_that_loses_the_race_to_another_process_keeps_the_winners_model(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp_path / "models" / "tiny"
    entry = SimpleNamespace(name="tiny", package="tiny", cache_dir=lambda: target)
    monkeypatch.setattr(loading, "embedded_gguf_path", lambda _: tmp_path / "tiny.gguf")
    # The GGUF read is the slow part of a real conversion; the tiny model stands in for what it yields.
    load_model, load_tokenizer = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def load_as_from_gguf(*_: object, **__: object) -> object:
        model = load_model(tiny_model_dir)
        model.config.quantization_config = {"quant_method": "gguf"}  # as a GGUF load leaves it
        return model

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", load_as_from_gguf)
    monkeypatch.setattr(
        loading.AutoTokenizer, "from_pretrained", lambda *_, **__: load_tokenizer(tiny_model_dir)
    )
    make_staging = tempfile.mkdtemp

    def other_process_finishes_first(**options: str) -> str:
        shutil.copytree(tiny_model_dir, target)  # its rename lands while this one is still writing
        return make_staging(**options)

    monkeypatch.setattr(loading.tempfile, "mkdtemp", other_process_finishes_first)
    assert loading.ensure_embedded_model(entry) == target  # type: ignore[arg-type]
    assert (target / "config.json").is_file()
    assert [path.name for path in target.parent.iterdir()] == ["tiny"]  # no staging folder left behind
