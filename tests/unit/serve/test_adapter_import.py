"""Adapters made elsewhere with peft (as TRL, Unsloth and LLaMA-Factory save them) register after the serving check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.cli import app
from tunesmith.serve.adapters import AdapterMismatchError


def _peft_adapter(base: Path, out: Path, **lora: object) -> Path:
    """A LoRA adapter saved by peft alone: no tokenizer, no model card (what other tools leave)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=8, lora_alpha=16, task_type="CAUSAL_LM", **lora)  # type: ignore[arg-type]
    get_peft_model(model, config).save_pretrained(out)
    return out


def test_a_trl_style_adapter_registers(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = _peft_adapter(tiny_model_dir, tmp_path / "trl", target_modules=["q_proj", "v_proj"])
    result = CliRunner().invoke(app, ["adapters", "register", "imported", str(adapter), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["version"] == 1


def test_an_adapter_with_full_modules_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`modules_to_save` (a full lm_head copy, common in Unsloth/LLaMA-Factory recipes) is not plain LoRA."""
    adapter = _peft_adapter(
        tiny_model_dir, tmp_path / "full", target_modules=["q_proj"], modules_to_save=["lm_head"]
    )
    result = CliRunner().invoke(app, ["adapters", "register", "imported", str(adapter)])
    assert isinstance(result.exception, AdapterMismatchError)
    assert "not one of a LoRA A and B pair" in str(result.exception)
    assert json.loads(CliRunner().invoke(app, ["adapters", "list", "--json"]).stdout) == []


def test_an_adapter_for_another_model_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    adapter = _peft_adapter(tiny_model_dir, tmp_path / "other", target_modules=["q_proj"])
    config = json.loads((tiny_model_dir / "config.json").read_text())
    other = tmp_path / "wider-model"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config | {"hidden_size": 128, "intermediate_size": 256}))
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    adapter_config["base_model_name_or_path"] = str(other)
    (adapter / "adapter_config.json").write_text(json.dumps(adapter_config))
    with pytest.raises(AdapterMismatchError, match="has size 64 where the base model's"):
        from tunesmith.serve.adapters import check_adapter_folder

        check_adapter_folder(adapter)
