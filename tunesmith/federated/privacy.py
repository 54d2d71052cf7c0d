"""Client-level differential privacy for the rounds: the noise the server adds and the epsilon it spends.

Owns: the Gaussian noise on the average of the clipped client updates (Flower's client-side fixed
clipping: each client clips its update with `flwr.clientapp.mod.fixedclipping_mod`, the server averages
them with equal weights, so one client moves the average by at most clip / n, and adds noise of standard
deviation noise_multiplier · clip / n, as Flower's `DifferentialPrivacyClientSideFixedClipping` does), and
the epsilon spent after some rounds, and the server's step along the noised average. Does not own:
clipping (Flower's mod, in `apps`) or sampling.

Where the noise goes, and the server learning rate. The noise is added once, at the server, to the
equal-weight average of the clipped updates: that average is the only release calibrated to the clip
(one client moves it by at most clip / n). The server's step of size η (`server_lr`) then moves the
global adapter to previous + η·(noised average − previous). The step reads nothing but the noised
average and the previous global adapter (itself an earlier release), so it is post-processing, and
differential privacy is closed under post-processing (Dwork & Roth 2014, "The Algorithmic Foundations
of Differential Privacy", Proposition 2.1): the epsilon is the same for every η. The step scales the
noise by η along with the signal, which is a matter of accuracy, not of privacy. The opposite order
(noise of the same size added after the step) would not be: the step multiplies one client's influence
by η, so that noise would buy only noise_multiplier / η.

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


def private_step(previous: Arrays, average: Arrays, server_lr: float, clip: float, noise_multiplier: float,
                 clients: int, seed: int) -> Arrays:  # fmt: skip
    """The global adapter after the server's step of `server_lr` from `previous` along the noised `average`.

    `average` is the equal-weight average of `clients` clipped updates applied to `previous` (the plain
    FedAvg result); the noise is calibrated to it, and the step is post-processing (module docstring).
    """
    noisy = add_noise(average, clip, noise_multiplier, clients, seed)
    return {
        key: (previous[key] + server_lr * (noisy[key] - previous[key])).astype(np.float32) for key in noisy
    }


def gaussian_epsilon(releases: int, noise_multiplier: float, delta: float) -> float:
    """The epsilon at `delta` after `releases` Gaussian releases at `noise_multiplier` (see the docstring)."""
    return (
        releases / (2 * noise_multiplier**2)
        + math.sqrt(2 * releases * math.log(1 / delta)) / noise_multiplier
    )
