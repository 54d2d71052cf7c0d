"""Exports of the tiny model's adapter: files written, parity recorded, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.export.core import export_model
from tunesmith.export.errors import ParityError
from tunesmith.export.parity import demo_chats


def _export(adapter: Path, fmt: str, out: Path, **options: object) -> object:
    return export_model(adapter, fmt, out, force=False, chats=demo_chats(), prompt_count=20, **options)  # type: ignore[arg-type]


def test_merged_export_matches_the_adapter_logits(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = _export(tiny_adapter_dir, "merged", tmp_path / "merged")
    out = tmp_path / "merged"
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (
        AutoTokenizer.from_pretrained(out).chat_template
        == AutoTokenizer.from_pretrained(tiny_adapter_dir).chat_template
    )
    parity = json.loads((out / "parity.json").read_text())["merged_logits"]
    assert parity["prompts"] == 20 and parity["max_logit_difference"] <= 1e-3
    assert AutoModelForCausalLM.from_pretrained(out).dtype.is_floating_point
    assert not list(tmp_path.glob(".merged.partial-*"))
    assert result.bytes > 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("quantization", ["f16", "q8_0"])
def test_gguf_export_loads_back_and_agrees(tiny_adapter_dir: Path, tmp_path: Path, quantization: str) -> None:
    out = tmp_path / "gguf"
    _export(tiny_adapter_dir, "gguf", out, quantization=quantization)
    assert (out / f"model-{quantization}.gguf").is_file()
    parity = json.loads((out / "parity.json").read_text())
    assert parity["gguf_greedy_tokens"]["agreement"] >= {"f16": 0.99, "q8_0": 0.97}[quantization]
    assert parity["gguf_template"]["identical"] and parity["gguf_template"]["cases"] == 100
    # llama.cpp knows a byte-level pre-tokenizer as "gpt-2" and refuses the file under any other name
    # ("unknown pre-tokenizer type: 'gpt2'", llama-cpp-python 0.3.36); the tiny model's is byte-level.
    import gguf

    field = gguf.GGUFReader(out / f"model-{quantization}.gguf").fields["tokenizer.ggml.pre"]
    assert bytes(field.parts[field.data[0]]).decode() == "gpt-2"


def test_gguf_check_catches_a_wrong_layout(
    tiny_adapter_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without llama.cpp's q/k permutation the file loads but answers differently: the export fails."""
    from tunesmith.export import gguf

    monkeypatch.setattr(gguf, "_permuted", lambda name, data, config: data)
    with pytest.raises(ParityError, match=r"greedy tokens agree on .*first difference: prompt \d+"):
        _export(tiny_adapter_dir, "gguf", tmp_path / "bad")
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))


def test_an_existing_output_folder_is_refused_unless_forced(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "vllm"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--force"):
        _export(tiny_adapter_dir, "vllm", out)
    assert (out / "keep.txt").read_text() == "mine"
    export_model(tiny_adapter_dir, "vllm", out, force=True, chats=demo_chats(), prompt_count=2)
    assert not (out / "keep.txt").exists() and (out / "launch.sh").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vllm"]  # no staging or previous folder left


def test_a_failed_check_leaves_no_output(
    tiny_adapter_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tunesmith.export import merged

    monkeypatch.setattr(merged, "LOGIT_TOLERANCE", 0.0)
    with pytest.raises(ParityError, match=r"merged logits differ .* on prompt 0"):
        _export(tiny_adapter_dir, "merged", tmp_path / "merged")
    assert list(tmp_path.iterdir()) == []


def test_vllm_layout_has_the_adapter_and_the_launch_command(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    _export(tiny_adapter_dir, "vllm", tmp_path / "vllm")
    out = tmp_path / "vllm"
    assert (out / "adapters" / "tunesmith" / "adapter_model.safetensors").is_file()
    launch = (out / "launch.sh").read_text()
    assert "vllm serve" in launch and "--enable-lora" in launch and "--max-lora-rank 4" in launch
    modules = json.loads((out / "lora-modules.json").read_text())
    assert modules[0]["path"] == "adapters/tunesmith"


def test_an_unsupported_architecture_is_named(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from tunesmith.export.gguf import write_gguf

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"architectures": ["MambaForCausalLM"]}))
    with pytest.raises(ValueError, match="supports LlamaForCausalLM; this model is MambaForCausalLM"):
        write_gguf(model_dir, AutoTokenizer.from_pretrained(tiny_adapter_dir), tmp_path / "x.gguf", "f16")


def test_cli_exports_a_run_adapter_and_refuses_an_existing_folder(
    tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from tunesmith.cli import app

    out = tmp_path / "merged"
    arguments = [
        "export",
        str(tiny_adapter_dir),
        "--format",
        "merged",
        "--out",
        str(out),
        "--prompt-count",
        "3",
    ]
    result = CliRunner().invoke(app, [*arguments, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["parity"]["merged_logits"]["prompts"] == 3
    again = CliRunner().invoke(app, arguments)
    assert isinstance(again.exception, FileExistsError)
    wrong = CliRunner().invoke(app, ["export", str(tiny_adapter_dir), "--format", "onnx", "--out", str(out)])
    assert wrong.exit_code == 2 and "onnx: choose from merged" in wrong.output


def test_gguf_lora_names_and_permutes_like_llama_cpp(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    from tunesmith.export.gguf import _permute

    _export(tiny_adapter_dir, "gguf-lora", tmp_path / "lora")
    reader = gguf.GGUFReader(tmp_path / "lora" / "adapter-f32.gguf")
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.lora.alpha"].contents() == 8.0
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    assert len(tensors) == 2 * 7 * 2  # A and B of 7 linear layers in each of 2 blocks
    source = load_file(str(tiny_adapter_dir / "adapter_model.safetensors"))
    prefix = "base_model.model.model.layers.1.self_attn"
    assert np.array_equal(tensors["blk.1.attn_q.weight.lora_a"], source[f"{prefix}.q_proj.lora_A.weight"])
    assert np.array_equal(
        tensors["blk.1.attn_k.weight.lora_b"], _permute(source[f"{prefix}.k_proj.lora_B.weight"], 2)
    )
    assert json.loads((tmp_path / "lora" / "parity.json").read_text())["gguf_lora_read_back"]["identical"]


def test_cli_tables_match_the_library() -> None:
    """The CLI names the library's choices without importing torch; the two lists must agree."""
    from tunesmith.cli.export import DTYPE_NAMES, FORMAT_NAMES, QUANTIZATION_NAMES
    from tunesmith.export.core import FORMATS
    from tunesmith.export.gguf import FILE_TYPES
    from tunesmith.export.merged import DTYPES

    assert set(FORMAT_NAMES) == {*FORMATS, "hub"}
    assert set(DTYPE_NAMES) == set(DTYPES) and set(QUANTIZATION_NAMES) == set(FILE_TYPES)


def test_a_missing_base_model_is_named(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    import shutil

    from tunesmith.models.catalog import ModelNotFoundError

    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps(config | {"base_model_name_or_path": "/gone/model"})
    )
    with pytest.raises(ModelNotFoundError, match="/gone/model: no such model directory"):
        _export(adapter, "merged", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_export_after_a_killed_one_cleans_up_and_restores(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    """A killed export left its staging folder, and (killed mid --force) the old export moved aside."""
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / f".vllm.partial-{dead.stdout.strip()}-x1").mkdir()  # its writer is gone
    (tmp_path / ".vllm.previous").mkdir()
    (tmp_path / ".vllm.previous" / "launch.sh").write_text("the earlier export")
    live = tmp_path / ".vllm.partial-1-x2"  # pid 1 is alive: an export still running is left alone
    live.mkdir()
    with pytest.raises(FileExistsError, match="--force"):  # the restored export is not overwritten
        _export(tiny_adapter_dir, "vllm", tmp_path / "vllm")
    assert (tmp_path / "vllm" / "launch.sh").read_text() == "the earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "vllm"]


def test_checks_default_to_the_runs_own_validation_chats(tmp_path: Path) -> None:
    from tests.conftest import write_jsonl
    from tunesmith.export.parity import run_chats

    chat = {
        "messages": [
            {"role": "user", "content": "Is the patio open?"},
            {"role": "assistant", "content": "Yes."},
        ]
    }
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    assert run_chats(run / "adapter") is None  # not in a run folder: the caller uses the demo data
    train, val = (
        write_jsonl(tmp_path / "train.jsonl", [chat] * 3),
        write_jsonl(tmp_path / "val.jsonl", [chat]),
    )
    (run / "config.yaml").write_text(f"train:\n  data: {train}\n  val_data: {val}\n")
    assert run_chats(run / "adapter") == ([chat["messages"]], str(val))
    (run / "config.yaml").write_text(f"train:\n  data: {train}\n  val_data: {tmp_path / 'gone.jsonl'}\n")
    assert run_chats(run / "adapter") == ([chat["messages"]] * 3, str(train))  # val data gone: training data
