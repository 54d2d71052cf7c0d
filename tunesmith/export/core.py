"""`export_model`: one adapter (or run) to one target format, staged and checked before it is published.

Owns: finding the adapter and its base model, the per-format steps (`FORMATS`), the parity record
written as `parity.json`, and publishing: everything is written to a hidden staging folder beside
`out` and renamed into place only after the checks pass, so a failed or killed export leaves nothing
half-written under `out`. Does not own: the merge, the GGUF writer or the Modelfile (sibling modules).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.export.errors import ParityError
from tunesmith.export.gguf import MINIMUM_AGREEMENT, is_bos_added, write_gguf
from tunesmith.export.gguf_lora import write_gguf_lora
from tunesmith.export.hub import push_to_hub
from tunesmith.export.merged import export_merged
from tunesmith.export.ollama import write_modelfile
from tunesmith.export.parity import (
    Chat,
    check_greedy_tokens,
    check_rendering,
    check_special_tokens,
    encode_prompts,
    greedy_continuations,
    multi_turn_chats,
    prompt_chats,
)
from tunesmith.export.vllm import write_vllm_layout
from tunesmith.models.adapters import adapter_base_model, load_adapter
from tunesmith.models.loading import load_model, load_tokenizer, resolve_model


@dataclass(frozen=True)
class ExportJob:
    """What one export needs, resolved: the adapter folder, the base model path and the check inputs."""

    adapter_dir: Path
    base_model: str  # a local directory or hub id transformers loads
    prompts: Sequence[Chat]  # parity prompts (chats without the final answer)
    chats: Sequence[Chat]  # multi-turn chats for template parity
    dtype: str  # merged weights' dtype
    quantization: str  # GGUF file type: f16 or q8_0
    new_tokens: int  # greedy tokens generated per prompt for the GGUF check


@dataclass(frozen=True)
class ExportResult:
    out: Path
    format: str
    seconds: float
    bytes: int
    parity: dict[str, Any]


def find_adapter(source: str, find_run_dir: Callable[[str], Path]) -> Path:
    """An adapter folder from a folder path, or from a run id / run folder (its `adapter/`)."""
    path = Path(source).expanduser()
    if (path / "adapter_config.json").is_file():
        return path
    adapter = find_run_dir(source) / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{source}: the run has no LoRA adapter (a full fine-tune, or not finished)")
    return adapter


def export_model(
    source: Path, fmt: str, out: Path, *, force: bool, chats: Sequence[Chat], prompt_count: int,
    dtype: str = "float32", quantization: str = "f16", new_tokens: int = 16,
) -> ExportResult:  # fmt: skip
    """Export the adapter at `source` as `fmt` into `out`, after its parity checks pass.

    Raises:
        FileExistsError: `out` exists and `force` is false.
        ParityError: a check failed; nothing was written under `out`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    recover_killed_export(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out}: already exists; pass --force to replace it")
    job = ExportJob(
        adapter_dir=source, base_model=resolve_model(adapter_base_model(source)),
        prompts=prompt_chats(chats, prompt_count),
        chats=multi_turn_chats(chats, 50), dtype=dtype, quantization=quantization, new_tokens=new_tokens,
    )  # fmt: skip
    started = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    try:
        parity = FORMATS[fmt](job, staging)
        (staging / "parity.json").write_text(json.dumps(parity, indent=2) + "\n", encoding="utf-8")
        size = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file())
        _publish(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(out=out, format=fmt, seconds=time.monotonic() - started, bytes=size, parity=parity)


def export_to_hub(
    source: Path, repo_id: str, out: Path, *, force: bool, chats: Sequence[Chat], prompt_count: int,
    dtype: str, token: str | None, private: bool, endpoint: str | None = None,
) -> ExportResult:  # fmt: skip
    """The `merged` export into `out` (checked as usual), then `out` uploaded to the hub repository `repo_id`."""
    result = export_model(
        source, "merged", out, force=force, chats=chats, prompt_count=prompt_count, dtype=dtype
    )
    commit_url = push_to_hub(out, repo_id, token=token, private=private, endpoint=endpoint)
    return ExportResult(
        out, "hub", result.seconds, result.bytes, {**result.parity, "hub": {"commit": commit_url}}
    )


def recover_killed_export(out: Path) -> None:
    """Undo what a killed export of `out` left behind: its staging folders, and `out` moved aside.

    A staging folder is named after the process that wrote it; one whose process is gone is removed.
    A kill between the two renames of `_publish` leaves the previous export under its aside name and
    nothing at `out`: it is put back, so a killed `--force` export loses nothing.
    """
    for staging in out.parent.glob(f".{out.name}.partial-*"):
        pid = staging.name.removeprefix(f".{out.name}.partial-").split("-")[0]
        if not (pid.isdigit() and _process_alive(int(pid))):
            shutil.rmtree(staging, ignore_errors=True)
    previous = out.parent / f".{out.name}.previous"
    if previous.is_dir() and not out.exists():
        previous.rename(out)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _publish(staging: Path, out: Path) -> None:
    """Rename `staging` to `out`; an existing `out` (--force) is moved aside first and removed after."""
    previous = out.parent / f".{out.name}.previous"
    if out.exists():
        shutil.rmtree(previous, ignore_errors=True)
        out.rename(previous)
    staging.rename(out)
    shutil.rmtree(previous, ignore_errors=True)


def _export_merged(job: ExportJob, staging: Path) -> dict[str, Any]:
    return {"merged_logits": export_merged(job.adapter_dir, job.base_model, staging, job.dtype, job.prompts)}


def _export_gguf(job: ExportJob, staging: Path) -> dict[str, Any]:
    """Merge in fp32, write the GGUF, read it back through transformers and compare with the adapter."""
    tokenizer = load_tokenizer(str(job.adapter_dir))
    ids = encode_prompts(tokenizer, job.prompts)
    adapter_model = load_adapter(load_model(job.base_model, torch.float32), job.adapter_dir).eval()
    reference = greedy_continuations(adapter_model, ids, job.new_tokens, tokenizer.eos_token_id)
    del adapter_model
    gguf_file = staging / f"model-{job.quantization}.gguf"
    with tempfile.TemporaryDirectory(dir=staging.parent, prefix=".merged-") as merged_dir:
        parity = _export_merged(job, Path(merged_dir))
        write_gguf(Path(merged_dir), tokenizer, gguf_file, job.quantization)
    loaded = AutoModelForCausalLM.from_pretrained(str(staging), gguf_file=gguf_file.name, dtype=torch.float32)
    parity["gguf_greedy_tokens"] = check_greedy_tokens(
        loaded.eval(), ids, reference, MINIMUM_AGREEMENT[job.quantization], tokenizer.decode
    )
    parity["gguf_template"] = _check_gguf_template(tokenizer, staging, gguf_file, job.chats)
    return parity


def _check_gguf_template(
    tokenizer: Any, folder: Path, gguf_file: Path, chats: Sequence[Chat]
) -> dict[str, Any]:
    """The template and BOS flag in the GGUF metadata, as transformers' GGUF loader reads them back."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf_file).fields
    template = fields["tokenizer.chat_template"].contents()
    if template != tokenizer.chat_template:
        raise ParityError(f"{gguf_file.name}: the chat template in the GGUF metadata is not the tokenizer's")
    add_bos = bool(fields["tokenizer.ggml.add_bos_token"].contents())
    if add_bos != is_bos_added(tokenizer):
        raise ParityError(f"{gguf_file.name}: add_bos_token is {add_bos}, the tokenizer disagrees")
    gguf_tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file.name)
    result = check_rendering(
        tokenizer, [(chat, prompt) for chat in chats for prompt in (False, True)],
        lambda chat, prompt: gguf_tokenizer.apply_chat_template(
            chat, chat_template=template, tokenize=False, add_generation_prompt=prompt
        ),
        f"{gguf_file.name} chat template",
    )  # fmt: skip
    check_special_tokens(tokenizer, chats, add_bos)
    return {**result, "add_bos_token": add_bos}


def _export_ollama(job: ExportJob, staging: Path) -> dict[str, Any]:
    parity = _export_gguf(job, staging)
    tokenizer = load_tokenizer(str(job.adapter_dir))
    parity["modelfile_template"] = write_modelfile(
        tokenizer, f"./model-{job.quantization}.gguf", staging / "Modelfile", job.chats
    )
    return parity


def _export_gguf_lora(job: ExportJob, staging: Path) -> dict[str, Any]:
    return {"gguf_lora_read_back": write_gguf_lora(job.adapter_dir, staging / "adapter-f32.gguf")}


def _export_vllm(job: ExportJob, staging: Path) -> dict[str, Any]:
    return write_vllm_layout(job.adapter_dir, job.base_model, staging)


FORMATS: dict[str, Callable[[ExportJob, Path], dict[str, Any]]] = {
    "merged": _export_merged,
    "gguf": _export_gguf,
    "gguf-lora": _export_gguf_lora,
    "ollama": _export_ollama,
    "vllm": _export_vllm,
}
