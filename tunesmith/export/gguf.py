"""The `gguf` export: a merged checkpoint written as one GGUF file for llama.cpp and Ollama.

Owns: the HF → GGUF mapping for the architectures listed in `ARCHITECTURES` (hyperparameters, the
llama q/k row permutation, tensor names), the vocabulary and chat template metadata, and the checks
that read the file back. Does not own: merging (`merged`), the Modelfile (`ollama`).

Why not llama.cpp's `convert_hf_to_gguf.py`: it is not on PyPI from llama.cpp (the pip package
`llama-cpp-python` builds the C++ library and does not install the converter; the `convert-hf-to-gguf`
repackaging installs its own copy of the `gguf` module over the one this project depends on), and it
refuses any BPE tokenizer whose pre-tokenizer hash is not in its list, which includes every tokenizer
trained locally (the tests' tiny model). So the file is written with the pieces of the `gguf` package
llama.cpp maintains: `GGUFWriter` (the format), `get_tensor_name_map` (HF → GGUF tensor names),
`SpecialVocab` (merges, special token ids, chat template) and `quants.quantize` (Q8_0). What is left
here is the short per-architecture part (hyperparameter keys and the q/k permutation), copied from
the converter's `LlamaModel` and checked by loading the file back through transformers' GGUF loader,
which implements the inverse independently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerBase

FILE_TYPES = {
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}
MINIMUM_AGREEMENT = {"f16": 0.99, "q8_0": 0.97}  # greedy-token agreement with the adapter (issue #21)
ARCHITECTURES = {"LlamaForCausalLM": gguf.MODEL_ARCH.LLAMA}  # SmolLM2, Llama 2/3, TinyLlama


def write_gguf(model_dir: Path, tokenizer: PreTrainedTokenizerBase, out_file: Path, file_type: str) -> None:
    """Write the transformers checkpoint at `model_dir` as a GGUF file of `file_type` (f16 or q8_0)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    architecture = config["architectures"][0]
    if architecture not in ARCHITECTURES:
        raise ValueError(f"GGUF export supports {', '.join(ARCHITECTURES)}; this model is {architecture}")
    arch = ARCHITECTURES[architecture]
    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_dir.name)
    _add_hyperparameters(writer, config, FILE_TYPES[file_type][0])
    _add_vocabulary(writer, tokenizer, model_dir)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.get("tie_word_embeddings"):
            continue  # llama.cpp reads the output projection from token_embd when output.weight is absent
        data = _permuted(name, tensor.numpy(), config)
        gguf_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"{name}: no GGUF tensor name for it in {architecture}")
        encoded, raw_dtype = _encoded(data, FILE_TYPES[file_type][1])
        writer.add_tensor(gguf_name, encoded, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_hyperparameters(writer: gguf.GGUFWriter, config: dict[str, Any], file_type: int) -> None:
    heads = config["num_attention_heads"]
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads", heads))
    writer.add_rope_freq_base(float(config.get("rope_theta") or config["rope_parameters"]["rope_theta"]))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // heads)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)


def _add_vocabulary(writer: gguf.GGUFWriter, tokenizer: PreTrainedTokenizerBase, model_dir: Path) -> None:
    """A byte-level BPE vocabulary (llama.cpp's `gpt2` model) with its merges, special ids and template."""
    vocabulary = tokenizer.get_vocab()
    by_id = {index: token for token, index in vocabulary.items()}
    special = set(tokenizer.all_special_ids)
    added = set(tokenizer.get_added_vocab().values())
    tokens, types = [], []
    for index in range(len(by_id)):
        tokens.append(by_id[index])
        if index in special:
            types.append(gguf.TokenType.CONTROL)
        elif index in added:
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(model_dir))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    vocab = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=len(tokens))
    vocab.add_to_gguf(writer, quiet=True)
    # What the tokenizer itself does, not what its config claims: llama.cpp adds BOS before the
    # rendered template iff this is true, and a template that already writes BOS would double it.
    writer.add_add_bos_token(is_bos_added(tokenizer))


def is_bos_added(tokenizer: PreTrainedTokenizerBase) -> bool:
    """True when encoding plain text puts the BOS token first."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


PRE_TOKENIZERS = {  # tokenizer.json pre_tokenizer shape → llama.cpp's name for its regex
    ("ByteLevel",): "gpt-2",  # llama.cpp reads "gpt2" as an unknown pre-tokenizer and refuses the file
    ("Digits", "ByteLevel"): "smollm",
}


def _pre_tokenizer(model_dir: Path) -> str:
    spec = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))["pre_tokenizer"]
    parts = spec.get("pretokenizers", [spec]) if spec else []
    shape = tuple(part["type"] for part in parts)
    if shape not in PRE_TOKENIZERS:
        raise ValueError(f"GGUF export: pre-tokenizer {shape} is not one llama.cpp names here")
    return PRE_TOKENIZERS[shape]


def _permuted(name: str, data: np.ndarray, config: dict[str, Any]) -> np.ndarray:
    """llama.cpp's rotary layout for q/k rows (the converter's `LlamaModel.permute`)."""
    heads = config["num_attention_heads"]
    if name.endswith("q_proj.weight"):
        return _permute(data, heads)
    if name.endswith("k_proj.weight"):
        return _permute(data, config.get("num_key_value_heads", heads))
    return data


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _encoded(data: np.ndarray, quantization: gguf.GGMLQuantizationType) -> tuple[np.ndarray, Any]:
    """Norms and other vectors stay F32 (as the converter keeps them); matrices take the file type."""
    if data.ndim == 1:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if quantization == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16), quantization
    return gguf.quants.quantize(data.astype(np.float32), quantization), quantization
