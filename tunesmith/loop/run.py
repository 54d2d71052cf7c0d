"""Driving a cycle: start one when a trigger fires, then run the step of each state, committing the next
state (with its event and audit record) before the following step begins.

Owns: the table of which step runs in which state (`STEPS`), resuming an open cycle from its last
committed state with the policy it started under, stopping where a cycle waits (for a person's
approval, for canary traffic) or where `until` says, one `loop run` per deployment at a time, and
what a person does to a cycle (approve, reject, cancel). Does not own: the steps' work (`build`, `release`), the verdicts (`decide`) or the
storage (`registry.loop_store`).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from tunesmith.config import ConfigError, tunesmith_home
from tunesmith.locking import single_holder
from tunesmith.loop.build import build_dataset, check_trigger, train_candidate, training_rows
from tunesmith.loop.context import LoopContext, check_loop
from tunesmith.loop.policy import LoopPolicySpec
from tunesmith.loop.release import changed_by_hand, end_canary, gate_candidate, start_canary, watch_canary
from tunesmith.loop.states import OPEN, LoopState
from tunesmith.registry.loop_store import LoopCycle, LoopStore
from tunesmith.registry.store import Registry


@dataclass(frozen=True)
class Transition:
    """What a step made: the state it moves the cycle to, and the lineage it adds."""

    state: LoopState
    data: dict[str, Any]
    message: str
    candidate: str | None = None
    reason: str | None = None  # why a cycle ended without promoting


Step = Callable[[LoopContext, LoopCycle, str | None], Transition | str]  # a str: why it waits


def _build(context: LoopContext, cycle: LoopCycle, actor: str | None) -> Transition:
    data = build_dataset(context, cycle)
    splits = ", ".join(f"{name} {count}" for name, count in data["splits"].items())
    return Transition(LoopState.dataset_built, data, f"dataset {data['dataset'][:12]} ({splits})")


def _train(context: LoopContext, cycle: LoopCycle, actor: str | None) -> Transition:
    data = train_candidate(context, cycle)
    message = (
        f"{data['adapter']} from run {data['run_id']} ({data['steps']} steps, from {data['init_adapter']})"
    )
    return Transition(LoopState.candidate_trained, data, message, candidate=data["adapter"])


def _gate(context: LoopContext, cycle: LoopCycle, actor: str | None) -> Transition:
    checks, data = gate_candidate(context, cycle)
    data["checks"] = [{"name": check.name, "passed": check.passed, "line": check.line} for check in checks]
    failed = [check.line for check in checks if not check.passed]
    if failed:
        reason = "failed the gate: " + "; ".join(failed)
        return Transition(LoopState.blocked, data, reason, reason=reason)
    return Transition(LoopState.gated, data, "passed the gate: " + "; ".join(check.line for check in checks))


def _after_gate(context: LoopContext, cycle: LoopCycle, actor: str | None) -> Transition:
    if context.policy.require_approval:
        message = f"the policy wants approval: tunesmith loop approve {cycle.id} (or reject {cycle.id})"
        return Transition(LoopState.awaiting_approval, {}, message)
    return _canary(context, cycle, actor)


def _canary(context: LoopContext, cycle: LoopCycle, actor: str | None) -> Transition:
    data = start_canary(context, cycle, actor)
    message = f"{cycle.candidate} serves {context.policy.canary.weight:g}% of {context.deployment}"
    return Transition(LoopState.canary, data, message)


def _watch(context: LoopContext, cycle: LoopCycle, actor: str | None) -> Transition | str:
    current = changed_by_hand(context, cycle)
    if current is not None:  # a person decided: the loop records it and leaves their weights alone
        shown = ", ".join(f"{variant['model']}={variant['weight']:g}" for variant in current)
        data = {"variants": current, "changed": False, "by_hand": True}
        if [variant["model"] for variant in current] == [cycle.candidate]:
            return Transition(LoopState.promoted, data, f"{cycle.candidate} promoted by hand ({shown})")
        reason = f"the deployment's variants were changed by hand during the canary ({shown}); left as set"
        return Transition(LoopState.rolled_back, data, reason, reason=reason)
    verdict = watch_canary(context, cycle)
    if verdict.action is None:
        return verdict.reason
    promote = verdict.action == "promote"
    data = {
        "verdict": verdict.reason,
        "ab": verdict.summary,
        **end_canary(context.registry, cycle, promote, actor),
    }
    if promote:
        return Transition(LoopState.promoted, data, f"{cycle.candidate} promoted: {verdict.reason}")
    reason = f"rolled back to {cycle.champion}: {verdict.reason}"
    return Transition(LoopState.rolled_back, data, reason, reason=reason)


# What each objective needs from the champion's data and the feedback, as the refusal says it.
NEEDS = {
    "sft": "no training rows (the champion's data or corrections)",
    "dpo": "no preference feedback (preferences, rankings, corrections)",
    "kto": "not both good and bad rated answers (thumbs, ratings)",
}

STEPS: dict[LoopState, Step] = {
    LoopState.triggered: _build,
    LoopState.dataset_built: _train,
    LoopState.candidate_trained: _gate,
    LoopState.gated: _after_gate,
    LoopState.approved: _canary,
    LoopState.canary: _watch,
}


@dataclass(frozen=True)
class LoopOutcome:
    """One `loop run` pass: the cycle it worked on (None: no trigger fired) and where it stopped, in words."""

    cycle: LoopCycle | None
    note: str

    def to_dict(self) -> dict[str, Any]:
        return {"loop": self.cycle.to_dict() if self.cycle else None, "note": self.note}


def open_cycle(registry: Registry, deployment: str) -> LoopCycle | None:
    """The deployment's cycle under way, if any."""
    return next((c for c in LoopStore(registry).cycles(deployment) if c.state in OPEN), None)


def run_loop(
    registry: Registry,
    deployment: str,
    policy: LoopPolicySpec,
    *,
    until: LoopState | None = None,
    now: bool = False,
    actor: str | None = None,
) -> LoopOutcome:
    """Resume the deployment's open cycle, or start one if a trigger fires (`now`: regardless), and run
    its steps until it ends, waits, or reaches `until`. An open cycle keeps the policy it started with.

    Raises:
        ConfigError: bad input (see `check_loop`), or a new cycle would have no rows to train on;
            nothing is started or changed.
    """
    with _held(deployment):
        return _run(registry, deployment, policy, until, now, actor)


def _run(
    registry: Registry,
    deployment: str,
    policy: LoopPolicySpec,
    until: LoopState | None,
    now: bool,
    actor: str | None,
) -> LoopOutcome:
    store = LoopStore(registry)
    cycle = open_cycle(registry, deployment)
    if cycle is None:
        context = check_loop(registry, deployment, policy)
        cycle = _start(store, context, now, actor)
        if cycle is None:
            return LoopOutcome(None, "no trigger fired (see the policy's trigger section)")
    else:
        context = check_loop(
            registry, deployment, LoopPolicySpec.model_validate(cycle.policy), cycle.champion
        )
    note = ""
    while cycle.state in STEPS and cycle.state != until:
        try:
            result = STEPS[LoopState(cycle.state)](context, cycle, actor)
        except (Exception, KeyboardInterrupt) as error:
            message = (
                "cancelled" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
            )
            store.record_failure(cycle.id, message, actor=actor)
            raise
        if isinstance(result, str):
            note = result
            break
        cycle = store.advance(cycle.id, cycle.state, result.state, result.data, result.message,
                              candidate=result.candidate, reason=result.reason, actor=actor)  # fmt: skip
    note = note or _where(cycle)
    if context.policy.model_dump(mode="json") != policy.model_dump(mode="json"):
        note += f" (loop {cycle.id} keeps the policy it started with; a changed policy applies to the next)"
    return LoopOutcome(cycle, note)


def _held(deployment: str) -> AbstractContextManager[None]:
    """One `loop run` per deployment on this machine: a second stops instead of training the same
    candidate into the same folder (the registry refuses its late transition anyway)."""
    return single_holder(
        tunesmith_home() / "loops" / f"{deployment}.lock",
        lambda pid: f"another `tunesmith loop run` is working on {deployment} (pid {pid})",
    )


def _start(store: LoopStore, context: LoopContext, now: bool, actor: str | None) -> LoopCycle | None:
    cycles = store.cycles(context.deployment)
    trigger = check_trigger(context, cycles[-1] if cycles else None, now)
    if trigger is None:
        return None
    rows, sources = training_rows(context, trigger["feedback_id"])
    objective = context.policy.train.objective
    if not rows or (objective == "kto" and sources["good"] in (0, len(rows))):
        raise ConfigError(f"deployment {context.deployment}: {NEEDS[objective]} to train a candidate on")
    message = f"champion {context.champion.key}: " + "; ".join(trigger["reasons"])
    policy = context.policy.model_dump(mode="json")
    return store.start(context.deployment, context.champion.key, policy, LoopState.triggered, trigger, message,
                       open_states=set(OPEN), actor=actor)  # fmt: skip


def _where(cycle: LoopCycle) -> str:
    if cycle.state == LoopState.awaiting_approval:
        return f"loop {cycle.id} waits for `tunesmith loop approve {cycle.id}` (or `reject`)"
    if cycle.state in OPEN:
        return f"loop {cycle.id} stopped at {cycle.state}; the next `loop run` continues it"
    return f"loop {cycle.id} ended {cycle.state}" + (f": {cycle.reason}" if cycle.reason else "")


def cancel_cycle(registry: Registry, loop_id: int, note: str | None, actor: str | None) -> LoopCycle:
    """End an open cycle by hand: before its canary it is `rejected`; during it the champion gets all the
    traffic back and it is `rolled_back`. Either way the reason names who and why."""
    store = LoopStore(registry)
    cycle = store.get(loop_id)
    if cycle.state not in OPEN:
        raise ConfigError(f"loop {loop_id} has already ended ({cycle.state})")
    reason = "cancelled" + (f": {note}" if note else "")
    if cycle.state != LoopState.canary:
        return store.advance(loop_id, cycle.state, LoopState.rejected, {}, reason, reason=reason, actor=actor)
    data = end_canary(registry, cycle, False, actor)
    reason = f"rolled back to {cycle.champion}: {reason}"
    return store.advance(
        loop_id, cycle.state, LoopState.rolled_back, data, reason, reason=reason, actor=actor
    )


def decide_approval(
    registry: Registry, loop_id: int, approve: bool, note: str | None, actor: str | None
) -> LoopCycle:
    """A person's approval (the next `loop run` starts the canary) or rejection (the cycle ends)."""
    store = LoopStore(registry)
    cycle = store.get(loop_id)
    if cycle.state != LoopState.awaiting_approval:
        raise ConfigError(f"loop {loop_id} is {cycle.state}, not awaiting approval")
    data = {"note": note} if note else {}
    if approve:
        return store.advance(loop_id, cycle.state, LoopState.approved, data, note or "approved", actor=actor)
    reason = "rejected" + (f": {note}" if note else "")
    return store.advance(loop_id, cycle.state, LoopState.rejected, data, reason, reason=reason, actor=actor)


def loop_status(
    registry: Registry, deployment: str | None = None, loop_id: int | None = None
) -> list[dict[str, Any]]:
    """Cycles (one, a deployment's, or all), each with its history."""
    store = LoopStore(registry)
    cycles = [store.get(loop_id)] if loop_id is not None else store.cycles(deployment)
    return [{**cycle.to_dict(), "history": store.history(cycle.id)} for cycle in cycles]
