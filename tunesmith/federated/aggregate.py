"""Aggregating the clients' LoRA adapters into the global one: pure numpy, no torch, no flwr.

Owns: FedAvg of A and B (what FlowerTune does), the exact alternative, and the error each makes against
the true average of the clients' updates. Does not own: which clients take part, the transport, or files.

Why FedAvg of A and B is not the average update. A LoRA layer adds ΔW = s·B·A. Averaging the factors
gives mean(B)·mean(A), which is not mean(B·A): the cross terms B_i·A_j (i ≠ j) enter, and the error grows
as the clients' factors drift apart (non-IID data, many local steps). FedEx-LoRA (Singhal et al. 2024,
arXiv:2410.09432) and FLoRA (Wang et al. 2024, arXiv:2409.05976) point this out and remove it: FLoRA
stacks the clients' factors, B = [w_1·B_1 … w_N·B_N] and A = [A_1; …; A_N], whose product is the exact
weighted average at rank N·r; FedEx-LoRA keeps rank r and folds the residual into the frozen weights.

What tunesmith does ("exact"): it forms the stacked product exactly (in float64, from QR factors of the
stacked B and Aᵀ, never the d_out × d_in matrix), and keeps its `rank` leading singular directions:
B = U·√S, A = √S·Vᵀ. With `rank` ≥ N·r that is FLoRA's exact average (to float rounding); with `rank` = r
it is the best rank-r approximation of the average (Eckart–Young), so its error is never above FedAvg's,
whose product also has rank r. The global adapter stays a normal peft LoRA adapter (served, evaluated
and exported like any other) and the base weights are never touched, unlike FedEx-LoRA; the truncation
residual is reported every round instead of hidden.

Which factors carry the product (the gauge). B·A = (B·G)·(G⁻¹·A) for any invertible G, so the factors
are a choice, and it matters for the next round: LoRA's gradients are ∂B ∝ A and ∂A ∝ Bᵀ, so balanced
factors of a small average (B = U·√S, A = √S·Vᵀ, both tiny after a round or two) leave the clients near
the saddle at zero and they barely move. The exact aggregation returns A = c·Vᵀ and B = U·S/c, with c the
clients' root-mean-square norm of a row of A: A keeps the scale of a fresh adapter's A (which the clients
all start from) and B carries the update, as in a LoRA trained in one place.

The server learning rate (Reddi et al. 2021, "Adaptive Federated Optimization", arXiv:2003.00295: FedAvg
is a server step of size 1 along the average update). With `server_lr` η the global adapter becomes
W + η·(mean ΔWᵢ − W) in product space: the previous global adapter is one more member of the stacked
average, weighted 1 − η, so the exact method stays exact. η > 1 makes up for averaging: N clients' local
steps run side by side, and their average moves about as far as one client's, not as far as the N·K
sequential steps of one pooled run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Arrays = dict[str, NDArray[np.float32]]  # a peft adapter state dict: "<module>.lora_A.weight" -> array

LORA_A = ".lora_A.weight"
LORA_B = ".lora_B.weight"


@dataclass(frozen=True)
class Aggregate:
    """The global adapter after a round, and how far it is from the exact average of the updates."""

    arrays: Arrays
    rank: int
    error: float  # ‖ΔW_global − mean ΔW‖_F / ‖mean ΔW‖_F over all adapted layers
    fedavg_error: float  # the same for FedAvg of A and B, reported beside the method used


def lora_modules(arrays: Arrays) -> list[str]:
    """The adapted modules' key prefixes, sorted; every A has its B."""
    prefixes = sorted(key.removesuffix(LORA_A) for key in arrays if key.endswith(LORA_A))
    missing = [prefix for prefix in prefixes if prefix + LORA_B not in arrays]
    if missing or 2 * len(prefixes) != len(arrays):
        raise ValueError(
            f"not a LoRA adapter state dict (unpaired keys near {missing[:3] or sorted(arrays)[:3]})"
        )
    return prefixes


def example_weights(examples: Sequence[int]) -> NDArray[np.float64]:
    """Each client's share of the round's examples (FedAvg's weighting)."""
    counts = np.asarray(examples, dtype=np.float64)
    if counts.size == 0 or (counts <= 0).any():
        raise ValueError(f"every client must report a positive example count, got {list(examples)}")
    weights: NDArray[np.float64] = counts / counts.sum()
    return weights


def fedavg(clients: Sequence[Arrays], weights: NDArray[np.float64]) -> Arrays:
    """The weighted average of every array (A and B separately)."""
    return {
        key: np.sum(
            [w * client[key].astype(np.float64) for client, w in zip(clients, weights, strict=True)], axis=0
        ).astype(np.float32)
        for key in clients[0]
    }


def exact_average(clients: Sequence[Arrays], weights: NDArray[np.float64], rank: int) -> tuple[Arrays, float]:
    """The weighted average of the clients' products B·A, factorised at `rank`; and its relative residual.

    Factors are returned at exactly `rank` (zero-padded when the average's rank is lower) with A = c·Vᵀ at
    the clients' row scale c and B = U·S/c (the gauge, module docstring), so a client trains them further
    like a fresh adapter of that rank. A weight may be negative (the previous global adapter under a server
    learning rate above 1).
    """
    arrays: Arrays = {}
    residual_sq = total_sq = 0.0
    for prefix in lora_modules(clients[0]):
        stacked_b = np.concatenate(
            [
                w * client[prefix + LORA_B].astype(np.float64)
                for client, w in zip(clients, weights, strict=True)
            ],
            axis=1,
        )  # (d_out, N·r)
        stacked_a = np.concatenate([client[prefix + LORA_A].astype(np.float64) for client in clients], axis=0)
        u, s, vt = _product_svd(stacked_b, stacked_a)
        kept = min(rank, s.size)
        # The gauge (module docstring): A at the clients' row scale, B carries the product.
        scale = float(np.sqrt(np.mean(np.sum(stacked_a**2, axis=1))))  # RMS norm of a row of A
        scale = scale if scale > 0 else 1.0
        b = np.zeros((stacked_b.shape[0], rank))
        a = np.zeros((rank, stacked_a.shape[1]))
        b[:, :kept] = u[:, :kept] * (s[:kept] / scale)
        a[:kept] = scale * vt[:kept]
        arrays[prefix + LORA_A] = a.astype(np.float32)
        arrays[prefix + LORA_B] = b.astype(np.float32)
        residual_sq += float(np.sum(s[kept:] ** 2))
        total_sq += float(np.sum(s**2))
    return arrays, float(np.sqrt(residual_sq / total_sq)) if total_sq > 0 else 0.0


def _product_svd(
    b: NDArray[np.float64], a: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """SVD of b @ a through QR of each factor: O((d_out + d_in)·k²) for inner size k, no d_out × d_in SVD."""
    q_b, r_b = np.linalg.qr(b)  # (d_out, k), (k, k)
    q_a, r_a = np.linalg.qr(a.T)  # (d_in, k), (k, k)
    u_small, s, vt_small = np.linalg.svd(r_b @ r_a.T)
    return q_b @ u_small, s, vt_small @ q_a.T


def average_error(clients: Sequence[Arrays], weights: NDArray[np.float64], result: Arrays) -> float:
    """‖B·A − Σ wᵢ·Bᵢ·Aᵢ‖_F / ‖Σ wᵢ·Bᵢ·Aᵢ‖_F over all layers, for `result` at any rank."""
    error_sq = total_sq = 0.0
    for prefix in lora_modules(clients[0]):
        target = sum(
            w * client[prefix + LORA_B].astype(np.float64) @ client[prefix + LORA_A].astype(np.float64)
            for client, w in zip(clients, weights, strict=True)
        )
        got = result[prefix + LORA_B].astype(np.float64) @ result[prefix + LORA_A].astype(np.float64)
        error_sq += float(np.sum((got - target) ** 2))
        total_sq += float(np.sum(np.asarray(target) ** 2))
    return float(np.sqrt(error_sq / total_sq)) if total_sq > 0 else 0.0


def aggregate(
    method: str,
    clients: Sequence[Arrays],
    examples: Sequence[int],
    rank: int,
    server_lr: float = 1.0,
    previous: Arrays | None = None,
) -> Aggregate:
    """The round's global adapter by `method` ("exact" at `rank`, or "fedavg"), weighted by examples.

    With `server_lr` ≠ 1 the server steps from `previous` (the global adapter the clients started from)
    by `server_lr` times the average update; the errors are measured against that step's exact target.
    """
    weights = example_weights(examples)
    members = list(clients)
    if server_lr != 1.0:
        if previous is None:
            raise ValueError("a server learning rate other than 1 needs the previous global adapter")
        members = [previous, *clients]
        weights = np.concatenate([[1.0 - server_lr], server_lr * weights])
    averaged = fedavg(members, weights)
    fedavg_error = average_error(members, weights, averaged)
    if method == "fedavg":
        return Aggregate(averaged, _rank(averaged), fedavg_error, fedavg_error)
    arrays, residual = exact_average(members, weights, rank)
    return Aggregate(arrays, rank, residual, fedavg_error)


def _rank(arrays: Arrays) -> int:
    return int(arrays[lora_modules(arrays)[0] + LORA_A].shape[0])


def payload_bytes(arrays: Arrays) -> int:
    """Bytes of the adapter's tensors: what a round moves each way per client, before framing."""
    return sum(int(array.nbytes) for array in arrays.values())
