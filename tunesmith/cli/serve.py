"""`tunesmith serve`: the OpenAI-compatible server for the base model and its LoRA adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from tunesmith.cli.options import SERVE_FLAGS, spec_flags
from tunesmith.config import ServeSpec, build_spec, load_config_file


@spec_flags(ServeSpec, SERVE_FLAGS)
def serve(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="YAML file with a `serve:` section; flags override it."
    ),
    *,
    flags: dict[str, Any],
) -> None:
    """Serve the base model once, with many LoRA adapters, behind the OpenAI API.

    Clients call `model="base"`, an adapter (`name` or `name@version` from the registry) or a
    deployment (A/B variants, see `tunesmith deploy`). Keys come from `tunesmith keys create`.

    Endpoints: /v1/models, /v1/chat/completions, /v1/completions, /v1/feedback, /admin/...,
    /health, /metrics, and with --ui the web console at /ui. Ctrl-C finishes in-flight requests, then exits.

    --engine vllm hands generation to vLLM's multi-LoRA engine on a CUDA GPU (install tunesmith's
    `vllm` extra); everything else above stays tunesmith's.

    Examples:
      tunesmith serve --adapter acme=runs/run-20261123-182501-3fa9 --no-auth
      tunesmith serve --config serve.yaml --port 9000
      tunesmith serve --engine vllm --model Qwen/Qwen2.5-7B-Instruct --adapter acme=runs/run-20261123-182501-3fa9
    """
    from tunesmith.serve.inference import require_vllm

    spec = build_spec(ServeSpec, load_config_file(config).serve if config else None, flags)
    if spec.engine == "vllm":
        require_vllm()  # in a second, before the server's imports and the model load
    from tunesmith.serve.app import run_server

    run_server(spec)
