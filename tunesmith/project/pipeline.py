"""Running a project: which stages are stale and why, running those in order, and the project's status.

Owns: the plan (a target stage and the stages it reads, in pipeline order), deciding per stage whether
it is up to date (the same inputs and configuration as its last success, and its outputs still there)
or why it must rerun, recording each success and failure in the cache as it happens, stopping at the
first failure with earlier results left as they were, and one run at a time per project (a file lock).
Does not own: what a stage does (`stages`), the cache file (`cache`) or the project file (`spec`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from tunesmith.config import ConfigError, default_database_url
from tunesmith.locking import single_holder
from tunesmith.project.cache import (
    ProjectCache,
    StageFailure,
    StageRecord,
    changes,
    inputs_key,
    now,
    read_cache,
    write_cache,
)
from tunesmith.project.spec import NEEDS, Project, Stage, load_project
from tunesmith.project.stages import STAGES, StageContext
from tunesmith.registry.store import Registry


class StageState(StrEnum):
    """Where a stage stands."""

    up_to_date = "up to date"  # the same inputs and configuration as its last success; its outputs exist
    stale = "stale"  # it would run: never ran, something it reads changed, or its outputs are gone
    failed = "failed"  # stale, and its last attempt failed
    off = "off"  # not in the project's `stages`


@dataclass(frozen=True)
class StageStatus:
    stage: Stage
    state: StageState
    reasons: list[str]  # why it is stale (empty when up to date)
    summary: str | None  # what its last success made


@dataclass(frozen=True)
class StageEvent:
    """What `run_project` reports as it goes."""

    stage: Stage
    state: StageState  # up_to_date: skipped; stale: starting (reasons in `lines`); failed
    lines: list[str]  # the reasons it runs, or its summary once done, or the error
    seconds: float | None = None  # set when it finished


class StageFailed(Exception):
    """A stage raised; earlier stages' results and the cache are as they were before it."""

    def __init__(self, stage: Stage, error: BaseException) -> None:
        super().__init__(f"{stage} failed: {error}")
        self.stage = stage


@dataclass
class RunOutcome:
    ran: list[Stage] = field(default_factory=list)
    up_to_date: list[Stage] = field(default_factory=list)
    eval_dir: Path | None = None  # the before/after report, when the plan includes eval


def plan_stages(project: Project, target: Stage | None) -> list[Stage]:
    """The stages a run executes: every listed stage, or `target` and what it reads, in pipeline order."""
    listed = project.spec.stages
    if target is None:
        return list(listed)
    if target not in listed:
        raise ConfigError(f"stage {target} is not in this project's stages ({', '.join(listed)})")
    wanted = {target}
    for stage in reversed(list(Stage)):
        if stage in wanted:
            wanted.update(NEEDS[stage])
    return [stage for stage in Stage if stage in wanted]


def run_project(
    root: Path,
    target: Stage | None = None,
    *,
    force: Sequence[Stage] = (),
    show_progress: bool = True,
    on_event: Callable[[StageEvent], None] | None = None,
) -> RunOutcome:
    """Run the stages of the project in `root` that are stale (and `force`d ones), in order.

    Raises:
        ConfigError: a bad project file, a `target` or `force` outside the plan, or another run holding
            the project.
        StageFailed: a stage raised (its cause is the error); the stages before it keep their results.
    """
    project = load_project(root)
    plan = plan_stages(project, target)
    outside = [stage for stage in force if stage not in plan]
    if outside:
        raise ConfigError(f"--force {outside[0]}: not among the stages this run runs ({', '.join(plan)})")
    say = on_event or (lambda event: None)
    registry = Registry(default_database_url()).connect()
    outcome = RunOutcome()
    with _locked(project.state_dir):
        cache = read_cache(project.state_dir)
        for stage in plan:
            upstream = {need: cache.stages[need] for need in NEEDS[stage]}
            inputs = STAGES[stage].inputs(project, upstream)
            key = inputs_key(inputs)
            reasons = (
                ["forced (--force)"]
                if stage in force
                else _reasons(project, stage, key, inputs, cache, registry)
            )
            if not reasons:
                outcome.up_to_date.append(stage)
                say(StageEvent(stage, StageState.up_to_date, [cache.stages[stage].summary]))
                continue
            say(StageEvent(stage, StageState.stale, reasons))
            _run_stage(project, stage, key, inputs, cache, StageContext(key, registry, show_progress), say)
            outcome.ran.append(stage)
        if Stage.eval in plan:
            outcome.eval_dir = project.root / cache.stages[Stage.eval].outputs["path"]
    return outcome


def _run_stage(
    project: Project,
    stage: Stage,
    key: str,
    inputs: dict[str, object],
    cache: ProjectCache,
    context: StageContext,
    say: Callable[[StageEvent], None],
) -> None:
    started = time.perf_counter()
    upstream = {need: cache.stages[need] for need in NEEDS[stage]}
    try:
        output = STAGES[stage].run(project, upstream, context)
    except (Exception, KeyboardInterrupt) as error:
        message = "cancelled" if isinstance(error, KeyboardInterrupt) else f"{type(error).__name__}: {error}"
        cache.failures[stage] = StageFailure(key=key, error=message, at=now())
        write_cache(project.state_dir, cache)
        say(StageEvent(stage, StageState.failed, [message], time.perf_counter() - started))
        if isinstance(error, KeyboardInterrupt):
            raise
        raise StageFailed(stage, error) from error
    seconds = time.perf_counter() - started
    cache.stages[stage] = StageRecord(key=key, inputs=inputs, outputs=output.outputs, identity=output.identity,
                                      summary=output.summary, finished_at=now(), seconds=round(seconds, 1))  # fmt: skip
    cache.failures.pop(stage, None)
    write_cache(project.state_dir, cache)
    say(StageEvent(stage, StageState.up_to_date, [output.summary], seconds))


def _reasons(
    project: Project,
    stage: Stage,
    key: str,
    inputs: dict[str, object],
    cache: ProjectCache,
    registry: Registry,
) -> list[str]:
    """Why `stage` must run with these inputs; empty when it is up to date."""
    record = cache.stages.get(stage)
    if record is None:
        return ["never run"]
    if record.key != key:
        return changes(record.inputs, inputs)
    missing = STAGES[stage].missing(project, record.outputs, registry)
    return [missing] if missing else []


def project_status(root: Path) -> list[StageStatus]:
    """Every stage: up to date, stale (and why) or off, from the cache; nothing runs."""
    project = load_project(root)
    cache = read_cache(project.state_dir)
    registry = Registry(default_database_url()).connect()
    statuses: dict[Stage, StageStatus] = {}
    for stage in Stage:
        record = cache.stages.get(stage)
        summary = record.summary if record else None
        if stage not in project.spec.stages:
            statuses[stage] = StageStatus(stage, StageState.off, [], summary)
            continue
        reasons = ["never run"] if record is None else []
        if record is not None:  # its own changes, against the outputs of the stages it last read
            upstream = {need: cache.stages[need] for need in NEEDS[stage]}
            inputs = STAGES[stage].inputs(project, upstream)
            reasons = _reasons(project, stage, inputs_key(inputs), inputs, cache, registry)
        waiting = [need for need in NEEDS[stage] if statuses[need].state != StageState.up_to_date]
        reasons += [f"{need} is {statuses[need].state}" for need in waiting]
        failure = cache.failures.get(stage)
        state = StageState.up_to_date if not reasons else StageState.failed if failure else StageState.stale
        if failure and reasons:
            reasons.append(f"last attempt failed at {failure.at}: {failure.error}")
        statuses[stage] = StageStatus(stage, state, reasons, summary)
    return list(statuses.values())


def _locked(state_dir: Path) -> AbstractContextManager[None]:
    """Hold the project: a second `tunesmith run` in the same folder stops instead of racing this one."""
    return single_holder(
        state_dir / "lock",
        lambda pid: f"{state_dir.parent}: another `tunesmith run` is working here (pid {pid})",
    )
