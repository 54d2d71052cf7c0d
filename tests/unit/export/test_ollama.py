"""The Modelfile: its TEMPLATE is the chat template's wrapping, checked on multi-turn chats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tunesmith.export.core import export_model
from tunesmith.export.errors import ParityError
from tunesmith.export.ollama import go_template, read_wrapping, write_modelfile
from tunesmith.export.parity import demo_chats, multi_turn_chats

SMOL_STYLE = (  # SmolLM2's shape: a default system prompt when the chat has none
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_chatml_wrapping_and_go_template(tiny_adapter_dir: Path) -> None:
    wrapping = read_wrapping(AutoTokenizer.from_pretrained(tiny_adapter_dir))
    assert wrapping.prefix == {
        "system": "<|im_start|>system\n", "user": "<|im_start|>user\n", "assistant": "<|im_start|>assistant\n"
    }  # fmt: skip
    assert wrapping.suffix == "<|im_end|>\n" and wrapping.default_system is None
    assert go_template(wrapping) == (
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        '{{ if eq .Role "system" }}<|im_start|>system\n{{ else if eq .Role "user" }}<|im_start|>user\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ end }}{{ .Content }}<|im_end|>\n'
        '{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant\n{{ end }}{{ end }}'
    )


def test_default_system_prompt_becomes_system(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_adapter_dir)
    tokenizer.chat_template = SMOL_STYLE
    result = write_modelfile(
        tokenizer, "./model.gguf", tmp_path / "Modelfile", multi_turn_chats(demo_chats(), 50)
    )
    text = (tmp_path / "Modelfile").read_text()
    assert result["default_system"] == "You are helpful." and 'SYSTEM """You are helpful."""' in text
    assert 'PARAMETER stop "<|im_end|>"' in text and text.startswith("FROM ./model.gguf\n")
    assert result["cases"] == 100  # 50 chats, and each again without its last answer, as a prompt


def test_a_template_that_is_not_per_role_wrapping_is_refused(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_adapter_dir)
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}{% if loop.index is even %}!{% endif %}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ParityError, match=r"Modelfile TEMPLATE: case \d+ .* renders differently"):
        write_modelfile(tokenizer, "./model.gguf", tmp_path / "Modelfile", multi_turn_chats(demo_chats(), 50))


def test_ollama_export_has_gguf_and_modelfile(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    export_model(
        tiny_adapter_dir, "ollama", tmp_path / "ollama", force=False, chats=demo_chats(), prompt_count=5
    )
    out = tmp_path / "ollama"
    assert (out / "model-f16.gguf").is_file() and (out / "Modelfile").read_text().startswith(
        "FROM ./model-f16.gguf"
    )
    assert json.loads((out / "parity.json").read_text())["modelfile_template"]["identical"]
