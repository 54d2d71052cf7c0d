"""The `vllm` export: the adapter laid out for vLLM's multi-LoRA serving, with the launch command.

Owns: the folder layout (`adapters/<name>/` with peft's files), `launch.sh` and `lora-modules.json`.
Does not own: vLLM itself (not installed here; the command is written, not run).
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def write_vllm_layout(
    adapter_dir: Path, base_model: str, out: Path, name: str = "tunesmith"
) -> dict[str, Any]:
    """Copy the adapter into `out/adapters/<name>` and write the `vllm serve` command that loads it."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    target = out / "adapters" / name
    target.mkdir(parents=True)
    for file in sorted(adapter_dir.iterdir()):
        if file.is_file() and file.name != "README.md":
            shutil.copy2(file, target / file.name)
    missing = [f for f in ADAPTER_FILES if not (target / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{adapter_dir}: not a peft adapter (missing {', '.join(missing)})")
    modules = [{"name": name, "path": f"adapters/{name}", "base_model_name": base_model}]
    (out / "lora-modules.json").write_text(json.dumps(modules, indent=2) + "\n", encoding="utf-8")
    command = [
        "vllm", "serve", base_model, "--enable-lora", "--max-lora-rank", str(config["r"]),
        "--lora-modules", json.dumps(modules[0]),
    ]  # fmt: skip
    (out / "launch.sh").write_text(
        '#!/bin/sh\n# Run from this folder; clients call the model "' + name + '".\n'
        + shlex.join(command) + "\n", encoding="utf-8",
    )  # fmt: skip
    (out / "launch.sh").chmod(0o755)
    return {
        "adapter_files": sorted(p.name for p in target.iterdir()),
        "rank": config["r"],
        "command": shlex.join(command),
    }
