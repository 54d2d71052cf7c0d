from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import DEMO
from tunesmith.cli import app
from tunesmith.config import ConfigError, TrainSpec, default_database_url
from tunesmith.models.loading import load_model
from tunesmith.registry.store import Registry
from tunesmith.train import quantized
from tunesmith.train.plan import ModelShape, estimate_memory
from tunesmith.train.sft import train_sft


def _spec(tiny_model_dir: Path, out: Path, **overrides: Any) -> TrainSpec:
    settings = {"model": str(tiny_model_dir), "data": DEMO / "val.jsonl", "max_steps": 2, "batch_size": 4,
                "hold_out_val": False, "out": out, "lora": {"dropout": 0.0}} | overrides  # fmt: skip
    return TrainSpec(**settings)


def test_method_qlora_is_sft_with_qlora_tuning_and_preference_may_use_it() -> None:
    spec = TrainSpec(data=Path("x.jsonl"), method="qlora")
    assert (spec.method, spec.tuning) == ("sft", "qlora")
    assert TrainSpec(data=Path("x.jsonl"), method="dpo", tuning="qlora").tuning == "qlora"
    with pytest.raises(ValueError, match="set tuning: lora"):
        TrainSpec(data=Path("x.jsonl"), method="dpo", tuning="full")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_without_cuda_qlora_fails_before_loading_anything_and_says_what_is_missing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(
        ConfigError, match=r"QLoRA needs a CUDA GPU and bitsandbytes; this machine has no CUDA GPU"
    ):
        train_sft(_spec(tiny_model_dir, tmp_path / "run", tuning="qlora"), progress=False)
    assert not (tmp_path / "run").exists()  # no run folder, nothing loaded
    result = CliRunner().invoke(app, ["train", "--model", str(tiny_model_dir), "--data", str(DEMO / "val.jsonl"),
                                      "--method", "qlora", "--out", str(tmp_path / "cli")])  # fmt: skip
    assert result.exit_code != 0 and "use --tuning lora" in str(result.exception)
    assert not (tmp_path / "cli").exists()


def test_the_4bit_load_asks_bitsandbytes_for_nf4_double_quant_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    import peft
    import transformers

    calls: dict[str, Any] = {}
    monkeypatch.setattr(quantized, "qlora_shortfall", lambda: [])
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda path, **kwargs: calls.setdefault("load", (path, kwargs)) and "model")  # fmt: skip
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training",
                        lambda model, **kwargs: calls.setdefault("prepare", (model, kwargs)) and "prepared")  # fmt: skip
    assert quantized.load_quantized_model("base", gradient_checkpointing=True) == "prepared"
    path, kwargs = calls["load"]
    config = kwargs["quantization_config"]
    assert path == "base" and config.load_in_4bit and config.bnb_4bit_quant_type == "nf4"
    assert config.bnb_4bit_use_double_quant and config.bnb_4bit_compute_dtype == torch.bfloat16
    assert kwargs["device_map"] == {"": 0}
    assert calls["prepare"][1]["use_gradient_checkpointing"] is True


def test_a_qlora_run_trains_and_registers_a_plain_lora_adapter(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GPU here: the 4-bit load is replaced by a full-precision one; the rest of the path is real.
    loaded: list[str] = []

    def fake_load(path: str, *, gradient_checkpointing: bool) -> Any:
        loaded.append(path)
        return load_model(path)

    monkeypatch.setattr("tunesmith.train.sft.require_qlora", lambda: None)
    monkeypatch.setattr("tunesmith.train.model.load_quantized_model", fake_load)
    registry = Registry(default_database_url()).connect()
    result = train_sft(_spec(tiny_model_dir, tmp_path / "run", tuning="qlora"), listener=registry.run_listener(),
                       progress=False)  # fmt: skip
    assert loaded == [str(tiny_model_dir)] and result.method == "qlora"
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    assert "library_name: peft" in (adapter / "README.md").read_text()
    assert registry.get_run(result.run_id)["adapters"][0]["path"] == str(adapter)  # type: ignore[index]


def test_the_memory_estimate_counts_the_base_at_4_bits() -> None:
    shape = ModelShape(parameters=135_000_000, trainable=2_000_000, layers=30, heads=9, hidden=576,
                       intermediate=1536, vocab=49152)  # fmt: skip
    lora = estimate_memory(
        shape, "lora", bf16=True, pass_tokens=1024, gradient_checkpointing=False, device="cuda"
    )
    qlora = estimate_memory(
        shape, "qlora", bf16=True, pass_tokens=1024, gradient_checkpointing=False, device="cuda"
    )
    embeddings = 49152 * 576
    assert qlora.weights == int((135_000_000 - embeddings) * quantized.NF4_BYTES_PER_WEIGHT + embeddings * 2)
    assert qlora.weights < 0.45 * lora.weights and qlora.trainable_state == lora.trainable_state
