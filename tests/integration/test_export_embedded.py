"""The embedded model's adapter exported to Ollama (merged in fp32, GGUF f16, Modelfile): checks pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DEMO, requires_embedded_model
from tunesmith.config import TrainSpec
from tunesmith.export.core import export_model
from tunesmith.export.parity import demo_chats
from tunesmith.train.sft import train_sft

pytestmark = [requires_embedded_model, pytest.mark.slow]


def test_trained_adapter_exports_to_ollama_with_parity(embedded_model_home: Path, tmp_path: Path) -> None:
    spec = TrainSpec(data=DEMO / "train.jsonl", max_steps=3, batch_size=4, lr=2e-3, out=tmp_path / "run")
    adapter = Path(train_sft(spec, progress=False).artifact_dir)

    result = export_model(
        adapter, "ollama", tmp_path / "ollama", force=False, chats=demo_chats(), prompt_count=20
    )
    parity = json.loads((tmp_path / "ollama" / "parity.json").read_text())
    assert parity["merged_logits"]["max_logit_difference"] <= 1e-3
    assert (
        parity["gguf_greedy_tokens"]["agreement"] >= 0.99 and parity["gguf_greedy_tokens"]["positions"] > 100
    )
    assert parity["gguf_template"]["identical"] and parity["gguf_template"]["add_bos_token"] is False
    modelfile = (tmp_path / "ollama" / "Modelfile").read_text()
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile  # SmolLM2's default system
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert result.bytes > 200_000_000  # 135M parameters in f16
