"""The states of a loop cycle and which are open. No torch.

Owns: `LoopState` (one comment per state) and the sets the driver and the store need. Does not own the
work that moves a cycle from one state to the next (see `steps`) or the driver (see `run`).
"""

from __future__ import annotations

from enum import StrEnum


class LoopState(StrEnum):
    """Where a cycle stands; each is committed to the registry before the next step starts."""

    triggered = "triggered"  # a trigger fired: the cycle names the champion and why it began
    dataset_built = "dataset_built"  # the next dataset version is written and recorded
    candidate_trained = "candidate_trained"  # the candidate is trained and registered as a new version
    gated = "gated"  # the candidate cleared the gate against the champion
    awaiting_approval = "awaiting_approval"  # the policy wants a person's `loop approve` first
    approved = "approved"  # a person approved the canary
    canary = "canary"  # the candidate serves its share of traffic, watched by the A/B test
    promoted = "promoted"  # the candidate serves all traffic: it is the new champion (final)
    rolled_back = "rolled_back"  # the canary lost or was cancelled: the champion serves all; or a person
    #   changed the weights during it, and they stay as that person set them (final)
    blocked = "blocked"  # the candidate failed the gate and never served (final)
    rejected = "rejected"  # a person rejected it, or cancelled the cycle before its canary (final)


FINAL = frozenset({LoopState.promoted, LoopState.rolled_back, LoopState.blocked, LoopState.rejected})
OPEN = frozenset(set(LoopState) - FINAL)  # a deployment has at most one cycle in these
