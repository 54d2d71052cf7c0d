"""Chains of pointwise tensor ops fused into one CPU kernel each by torch.compile (inductor).

Owns: `fused_cpu_kernel`, a decorator for a function of plain tensor ops whose eager form makes one pass
over memory per op, and `FUSED_DEVICES`, where the fused training layers run. Compiled, inductor turns
the chain into one vectorised C++ loop that keeps the intermediates in registers (for the dropout mask,
one pass instead of 13; timings in benchmarks/RESULTS.md, "LoRA layers").

The compiled function is built lazily with `dynamic=True` (sizes and int arguments are symbols, so a new
shape or seed does not recompile) and is used only for CPU tensors outside another compile. The first
call of a process traces and compiles (seconds; less once inductor's C++ is cached on disk). Inductor
needs a C++ compiler: where compiling fails, a warning says why once, and the function's own eager ops
run from then on, with the same results.

A compiled kernel is trusted only once it has reproduced the eager ops bit for bit on a probe (the
decorator's `probe` arguments), checked once per process and torch thread count: torch 2.13's inductor
built a wrong dropout mask kernel with one thread (the int64 hash's values wrong from the 81st word on,
so LoRA dropout gave NaN losses) and a right one with two. A kernel that disagrees warns once and its
eager ops run instead, for that thread count.

CUDA calls run the eager ops: inductor's Triton build of the dropout mask's integer chain failed on an
H200 (torch 2.11, Triton 3.6: `CompilationError` in the generated kernel, 2026-11-26), and eager the
chain is a launch per op, so CUDA masks are drawn another way (`tunesmith.lora.dropout.keep_mask`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch._dynamo.exc import BackendCompilerFailed

F = TypeVar("F", bound=Callable[..., torch.Tensor])

_FAILED: list[str] = []  # why compiling failed in this process; empty while it works
FUSED_DEVICES = frozenset({"cpu", "cuda"})  # where the fused training layers run (their masks: see above)


def fused_cpu_kernel(probe: Callable[[], tuple[Any, ...]]) -> Callable[[F], F]:
    """`function` compiled by inductor for CPU calls, falling back to itself where compiling fails.

    `function` must be written so that its eager form is exact on its own (it is the fallback), and its
    compiled form must give the same values: integer and comparison chains do; floating-point chains
    may round differently and belong elsewhere. `probe()` returns fresh arguments for one CPU call
    (without `device`), on which the compiled kernel must match the eager ops before it is used.
    """

    def decorate(function: F) -> F:
        compiled: Callable[..., torch.Tensor] | None = None
        trusted: dict[int, bool] = {}  # torch thread count -> the compiled kernel reproduced the eager ops

        @functools.wraps(function)
        def call(*args: Any, device: torch.device) -> torch.Tensor:
            nonlocal compiled
            if device.type != "cpu" or _FAILED or torch.compiler.is_compiling():
                return function(*args, device=device)
            if compiled is None:
                compiled = torch.compile(function, dynamic=True)
            try:
                threads = torch.get_num_threads()
                if threads not in trusted:
                    trusted[threads] = _reproduces(compiled, function, probe, function.__name__, threads)
                if not trusted[threads]:
                    return function(*args, device=device)
                return compiled(*args, device=device)
            except BackendCompilerFailed as error:  # no C++ compiler, or an inductor bug
                _FAILED.append(str(error).splitlines()[0])
                warnings.warn(
                    f"torch.compile could not build tunesmith's fused CPU kernels ({_FAILED[0]}); "
                    "running them as separate ops, which is slower but gives the same results",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return function(*args, device=device)

        return call  # type: ignore[return-value]

    return decorate


def _reproduces(
    compiled: Callable[..., torch.Tensor],
    function: Callable[..., torch.Tensor],
    probe: Callable[[], tuple[Any, ...]],
    name: str,
    threads: int,
) -> bool:
    """Whether `compiled` gives exactly `function`'s values on `probe()`'s arguments; warns when not."""
    cpu = torch.device("cpu")
    agrees = torch.equal(compiled(*probe(), device=cpu), function(*probe(), device=cpu))
    if not agrees:
        warnings.warn(
            f"torch.compile built a wrong CPU kernel for tunesmith's {name} with {threads} thread(s); "
            "running its ops separately instead, which is slower but gives the right results",
            RuntimeWarning,
            stacklevel=3,
        )
    return agrees
