"""Client-level differential privacy for the rounds: the noise the server adds and the epsilon it spends.

Owns: the Gaussian noise on the average of the clipped client updates (Flower's client-side fixed
clipping: each client clips its update with `flwr.clientapp.mod.fixedclipping_mod`, the server averages
them with equal weights, so one client moves the average by at most clip / n, and adds noise of standard
deviation noise_multiplier · clip / n, as Flower's `DifferentialPrivacyClientSideFixedClipping` does), and
the epsilon spent after some rounds. Does not own: clipping (Flower's mod, in `apps`) or sampling.

The accountant is Rényi DP of the Gaussian mechanism (Mironov 2017, "Rényi Differential Privacy",
arXiv:1702.07875): R releases at noise multiplier z cost R·α / (2z²) at order α, converted to
(ε, δ) by ε = min over α > 1 of R·α / (2z²) + log(1/δ) / (α − 1), whose minimum is
R / (2z²) + √(2R·log(1/δ)) / z. It takes no credit for sampling a fraction of the clients (a valid upper
bound; Flower's own RDP accountant needs Google's dp-accounting package, not installed here).
"""

from __future__ import annotations

import math

import numpy as np

from tunesmith.federated.aggregate import Arrays


def add_noise(arrays: Arrays, clip: float, noise_multiplier: float, clients: int, seed: int) -> Arrays:
    """`arrays` (the equal-weight average of `clients` clipped updates) plus Gaussian noise."""
    std = noise_multiplier * clip / clients
    rng = np.random.default_rng(seed)
    return {
        key: (value + rng.normal(0.0, std, value.shape)).astype(np.float32) for key, value in arrays.items()
    }


def gaussian_epsilon(releases: int, noise_multiplier: float, delta: float) -> float:
    """The epsilon at `delta` after `releases` Gaussian releases at `noise_multiplier` (see the docstring)."""
    return (
        releases / (2 * noise_multiplier**2)
        + math.sqrt(2 * releases * math.log(1 / delta)) / noise_multiplier
    )
