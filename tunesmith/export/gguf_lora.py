"""The `gguf-lora` export: the adapter alone as a GGUF LoRA for llama.cpp's `--lora` beside the base GGUF.

Owns: the adapter's tensors under llama.cpp's names (`blk.N.attn_q.weight.lora_a` / `.lora_b`), its
metadata (`general.type=adapter`, `adapter.type=lora`, `adapter.lora.alpha`), and the read-back check.
Does not own: the base model's GGUF (`gguf`), whose tensor-name map and q/k permutation this reuses, so
the two files agree on layout (llama.cpp's `convert_lora_to_gguf.py` permutes B the same way).

The check reads the file back with the `gguf` package and compares every tensor with the adapter's
safetensors after undoing the permutation; nothing here can run llama.cpp itself (not installed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import load_file

from tunesmith.export.errors import ParityError
from tunesmith.export.gguf import ARCHITECTURES, _permuted
from tunesmith.models.loading import resolve_model


def write_gguf_lora(adapter_dir: Path, out_file: Path) -> dict[str, Any]:
    """Write the adapter at `adapter_dir` as a GGUF LoRA, read it back and compare; returns the figures."""
    adapter = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if adapter.get("use_rslora") or adapter.get("use_dora") or adapter.get("rank_pattern"):
        raise ValueError(
            "gguf-lora: llama.cpp scales a LoRA by alpha/rank; rsLoRA, DoRA and rank patterns differ"
        )
    base_dir = Path(resolve_model(adapter["base_model_name_or_path"]))
    config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    architecture = config["architectures"][0]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {architecture}")
    arch = ARCHITECTURES[architecture]
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(adapter["lora_alpha"]))
    expected: dict[str, np.ndarray] = {}
    for key, tensor in sorted(load_file(str(adapter_dir / "adapter_model.safetensors")).items()):
        module, part = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
        base_name = module + ".weight"
        gguf_base = names.get_name(base_name, try_suffixes=(".weight",))
        if gguf_base is None:
            raise ValueError(f"{key}: no GGUF tensor name for {base_name} in {architecture}")
        data = tensor.astype(np.float32)
        if part == "B.weight":  # B holds the output rows, which llama.cpp's q/k layout reorders
            data = _permuted(base_name, data, config)
        name = f"{gguf_base}.lora_{part[0].lower()}"
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.F32)
        expected[name] = data
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return _check_read_back(out_file, expected, float(adapter["lora_alpha"]))


def _check_read_back(out_file: Path, expected: dict[str, np.ndarray], alpha: float) -> dict[str, Any]:
    reader = gguf.GGUFReader(out_file)
    if reader.fields[gguf.Keys.Adapter.LORA_ALPHA].contents() != alpha:
        raise ParityError(f"{out_file.name}: adapter.lora.alpha does not read back as {alpha}")
    tensors = {tensor.name: tensor for tensor in reader.tensors}
    if set(tensors) != set(expected):
        raise ParityError(f"{out_file.name}: tensors {sorted(set(tensors) ^ set(expected))[:3]} differ")
    for name, data in expected.items():
        if not np.array_equal(np.asarray(tensors[name].data).reshape(data.shape), data):
            raise ParityError(f"{out_file.name}: {name} does not read back as written")
    return {"tensors": len(expected), "identical": True, "alpha": alpha}
