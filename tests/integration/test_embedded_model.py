"""The real embedded model: GGUF import, a few LoRA steps, and an adapter that changes outputs.

Uses the shared model cache of `embedded_model_home` (.cache/test-models in the repo), so the one-time
GGUF conversion is paid once per machine, not per test.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import DEMO, requires_embedded_model
from tunesmith.config import TrainSpec
from tunesmith.data.ingest import load_examples
from tunesmith.data.render import render_prompt
from tunesmith.eval.generate import generate_batched
from tunesmith.models.adapters import load_adapter
from tunesmith.models.loading import load_model, load_tokenizer, resolve_model
from tunesmith.train.sft import train_sft

pytestmark = requires_embedded_model


def test_gguf_import_then_lora_changes_the_output(embedded_model_home: Path, tmp_path: Path) -> None:
    path = resolve_model("smollm2-135m-instruct")
    config = json.loads((Path(path) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert (Path(path) / "model.safetensors").is_file() and (Path(path) / "chat_template.jinja").is_file()

    spec = TrainSpec(data=DEMO / "train.jsonl", max_steps=3, batch_size=4, lr=2e-3, out=tmp_path / "run")
    result = train_sft(spec, progress=False)
    assert result.status == "succeeded" and result.trained_tokens > 0

    tokenizer = load_tokenizer(path)
    example = load_examples(DEMO / "test.jsonl")[0]
    prompts = [render_prompt(tokenizer, example)]
    base = load_model(path).eval()
    before = generate_batched(base, tokenizer, prompts, max_new_tokens=12, batch_size=1)
    with torch.no_grad():
        base_logits = base(**tokenizer(prompts, return_tensors="pt")).logits
    tuned = load_adapter(base, Path(result.artifact_dir)).eval()
    with torch.no_grad():
        tuned_logits = tuned(**tokenizer(prompts, return_tensors="pt")).logits
    after = generate_batched(tuned, tokenizer, prompts, max_new_tokens=12, batch_size=1)
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-3)
    assert before != after
