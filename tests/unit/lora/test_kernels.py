"""Fused CPU kernels must compute exactly what their eager ops compute, and fall back when compiling fails."""

from __future__ import annotations

import warnings

import pytest
import torch

from tunesmith.lora import kernels
from tunesmith.lora.dropout import _mask_words, keep_mask

CPU = torch.device("cpu")
DEVICES = [CPU] + ([torch.device("cuda")] if torch.cuda.is_available() else [])  # CUDA: on a GPU machine


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("count", [1, 3, 17, 1000, 146_448, 250_001])
def test_the_compiled_dropout_mask_is_bit_for_bit_the_eager_one(count: int, device: torch.device) -> None:
    # Sizes from a tail-only loop to whole vectorised blocks plus a tail; seeds that wrap past 2**63.
    # On CUDA the eager ops run (see kernels' doc): the same mask as the CPU's, bit for bit.
    for seed, threshold in ((0, 819), (-7, 3277), (2**63 - 1, 1), (123_456_789_012, 16383)):
        eager = _mask_words.__wrapped__(torch.empty(count, dtype=torch.int64), seed, threshold, device=CPU)  # type: ignore[attr-defined]
        compiled = torch.empty(count, dtype=torch.int64, device=device)
        assert _mask_words(compiled, seed, threshold, device=device) is compiled  # written in place
        assert torch.equal(compiled.cpu(), eager)
    assert not kernels._FAILED  # the compiled kernel ran: this machine has a C++ compiler


def test_falls_back_to_the_eager_ops_with_a_warning_when_compiling_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(kernels, "_FAILED", [])
    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(inductor_config, "force_disable_caches", True)

    @kernels.fused_cpu_kernel(probe=lambda: (7,))
    def odd_numbers(count: int, *, device: torch.device) -> torch.Tensor:
        return torch.arange(count, device=device) * 2 + 1

    with pytest.warns(RuntimeWarning, match="could not build tunesmith's fused CPU kernels"):
        first = odd_numbers(5, device=CPU)
    assert first.tolist() == [1, 3, 5, 7, 9]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: compiling is not tried again
        assert odd_numbers(3, device=CPU).tolist() == [1, 3, 5]
    assert len(kernels._FAILED) == 1


def test_masks_drawn_with_one_thread_are_exact() -> None:
    # torch 2.13's inductor built this kernel wrong with one thread (NaN losses with LoRA dropout on a
    # one-thread run); whatever the compiler does, the masks must be the eager ops' masks.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the wrong kernel is reported, then set aside
            for count in (100, 4099, 146_448):
                words = _mask_words(torch.empty(count, dtype=torch.int64), 99, 819, device=CPU)
                eager = _mask_words.__wrapped__(torch.empty(count, dtype=torch.int64), 99, 819, device=CPU)  # type: ignore[attr-defined]
                assert torch.equal(words, eager)
            keep = keep_mask((4, 1000), 819, 5, torch.bfloat16, CPU)
    finally:
        torch.set_num_threads(threads)
    assert set(keep.float().unique().tolist()) == {0.0, 2.0}
    assert abs(float((keep == 0).float().mean()) - 0.05) < 0.02
