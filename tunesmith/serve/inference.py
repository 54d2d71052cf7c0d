"""The seam between the request layer and whatever generates: `InferenceEngine`.

Owns: what `service`, the admin and ops routes and the classifier guardrail ask of an engine (queue
jobs, say how loaded and how healthy it is, load and unload adapters, score labels, drain on close);
the two refusals every engine gives (`EngineClosedError`, `EngineBusyError`); refusing `engine: vllm`,
naming what to install, where vLLM or CUDA is missing (`require_vllm`: here, light, so that the CLI
says so in a second, before loading anything). Two engines keep the protocol: the embedded one
(`engine.GenerationEngine`, torch in this process, the default) and vLLM's (`vllm_engine.VllmEngine`,
CUDA GPUs). Does not own: either engine, or which one a server runs (see `app`). No torch import.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tunesmith.config import ConfigError

if TYPE_CHECKING:
    from tunesmith.serve.jobs import GenerationJob


class EngineClosedError(RuntimeError):
    """The engine is shutting down and takes no new jobs."""


class EngineBusyError(RuntimeError):
    """The queue is full; try again later."""


VLLM_INSTALL = "pip install 'tunesmith[vllm]'"


class VllmUnavailableError(ConfigError):
    """`engine: vllm` on a machine without vLLM or without a CUDA GPU; the message says what to do."""


def require_vllm() -> None:
    """Refuse, naming what to install, unless vLLM imports and torch sees a CUDA GPU."""
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        raise VllmUnavailableError(
            f"engine vllm: vLLM is not installed here ({error}); install it with {VLLM_INSTALL} on a machine "
            "with an NVIDIA GPU, or serve with the embedded engine (the default, --engine embedded)"
        ) from None
    import torch

    if not torch.cuda.is_available():
        raise VllmUnavailableError(
            "engine vllm: needs a CUDA GPU and torch sees none here; serve with the embedded engine (the "
            "default, --engine embedded) on CPUs"
        )


class InferenceEngine(Protocol):
    """Runs generation jobs from any thread; each job hears back through its own `sink`."""

    def start(self) -> None:
        """Start working (the server's lifespan calls this once)."""

    def submit_all(self, jobs: list[GenerationJob]) -> None:
        """Queue all of `jobs` or none (`EngineBusyError`, `EngineClosedError`)."""

    def stalled_for(self) -> float:
        """Seconds with work but without progress: 0 when idle, inf once the engine is dead."""

    @property
    def queued(self) -> int:
        """Jobs waiting to start."""

    @property
    def running(self) -> int:
        """Jobs generating."""

    @property
    def adapter_capacity(self) -> int:
        """Adapters the engine keeps loaded at once."""

    def loaded_adapters(self) -> list[str]:
        """Keys of the adapters loaded now."""

    def load_adapter(self, key: str, path: Path) -> Future[None]:
        """Load (and verify) an adapter; the future raises `ValueError` saying why it cannot serve."""

    def unload_adapter(self, key: str) -> Future[bool]:
        """Unload an adapter; the future's result is False if it was not loaded."""

    def score_labels(self, key: str, path: Path, prompt: str, labels: Sequence[str]) -> Future[list[float]]:
        """Each label's summed log-probability as the answer to the rendered `prompt`, through adapter `key`."""

    def close(self, timeout: float | None = None) -> None:
        """Stop taking jobs, finish the ones queued and running, stop."""
