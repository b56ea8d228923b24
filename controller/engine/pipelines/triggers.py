"""What starts a pipeline run, and the run's id.

A run starts, in this order of precedence, when a run was requested (``qmlops run --pipeline``, or the
``reconcile.qmlops.io/requestedAt`` annotation in the cluster), when the pipeline's own spec changed
since its last run (a new pipeline included), when a commit since the last run touched one of a
``gitChange`` trigger's globs, or when a ``schedule`` ticked since the last run (missed ticks run
once). ``drift`` triggers wait for monitoring to fire them.

A run's id is derived from its cause and the revision it runs at, so two controllers that see the
same trigger start the same run, never two.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from controller.api.quantumpipeline import QuantumPipelineSpec
from controller.engine.registry.canonical import digest_of
from controller.engine.registry.git import Git


class RunCause(StrEnum):
    REQUEST = "request"
    SPEC_CHANGE = "specChange"
    GIT_CHANGE = "gitChange"
    SCHEDULE = "schedule"
    DRIFT = "drift"


@dataclass(frozen=True)
class LastRun:
    """What the pipeline's ledger says of its latest run."""

    revision: str  # the commit it ran at
    started: datetime
    spec_digest: str
    request: str | None  # the requestedAt it answered, if a request started it


@dataclass(frozen=True)
class Start:
    """A run that is due: why, at which revision, and its id."""

    cause: RunCause
    reason: str
    revision: str
    slot: str = ""  # what makes this run unique beyond cause and revision (a tick, a request time)

    @property
    def id(self) -> str:
        return "run-" + digest_of([self.cause.value, self.revision, self.slot])[7:17]


def pipeline_digest(spec: QuantumPipelineSpec) -> str:
    """What a run depends on in the pipeline's spec (``suspend`` does not change what runs)."""
    return digest_of(spec.model_dump(mode="json", by_alias=True, exclude={"suspend"}))


def due_run(
    spec: QuantumPipelineSpec,
    last: LastRun | None,
    *,
    revision: str,
    now: datetime,
    requested_at: str | None = None,
    changed_paths: Callable[[str], Iterable[str]] | None = None,
) -> Start | None:
    """The run that should start now, if any. ``changed_paths(since)`` lists the files changed by the
    commits after ``since`` up to ``revision`` (asked only when a gitChange trigger needs it)."""
    if requested_at and (last is None or last.request != requested_at):
        return Start(RunCause.REQUEST, f"a run was requested at {requested_at}", revision, requested_at)
    digest = pipeline_digest(spec)
    if last is None:
        return Start(RunCause.SPEC_CHANGE, "the pipeline has not run yet", revision, digest)
    if last.spec_digest != digest:
        return Start(RunCause.SPEC_CHANGE, "the pipeline's spec changed since its last run", revision, digest)
    if last.revision != revision and changed_paths is not None:
        globs = [g for t in spec.triggers if t.git_change for g in t.git_change.paths]
        if globs:
            touched = sorted({p for p in changed_paths(last.revision) if any(glob_matches(g, p) for g in globs)})
            if touched:
                more = f" and {len(touched) - 1} more" if len(touched) > 1 else ""
                return Start(RunCause.GIT_CHANGE, f"{touched[0]}{more} changed since the last run", revision)
    for trigger in spec.triggers:
        if trigger.schedule:
            tick = last_tick(trigger.schedule, last.started, now)
            if tick is not None:
                moment = tick.strftime("%Y-%m-%dT%H:%M:%SZ")
                return Start(
                    RunCause.SCHEDULE, f"the schedule {trigger.schedule!r} came due at {moment}", revision, moment
                )
    return None


def waiting_for_monitoring(spec: QuantumPipelineSpec) -> list[str]:
    """The drift triggers, described: they start runs once monitoring reports a drift."""
    return [
        f"drift of {t.drift.metric.value} by {t.drift.threshold} every {t.drift.every}"
        + (f" on {t.drift.backend}" if t.drift.backend else "")
        for t in spec.triggers
        if t.drift
    ]


def last_tick(schedule: str, after: datetime, now: datetime) -> datetime | None:
    """The latest tick of ``schedule`` in (after, now], if any: missed ticks run once."""
    from croniter import croniter

    tick: datetime = croniter(schedule, now).get_prev(datetime)
    return tick if tick > after else None


def glob_matches(glob: str, path: str) -> bool:
    """Repository globs: ``*`` and ``?`` stay within a folder, ``**`` spans folders (``specs/**``
    matches everything below specs/, ``**/x.yaml`` any x.yaml)."""
    return _glob_regex(glob).fullmatch(path) is not None


@functools.lru_cache(maxsize=256)
def _glob_regex(glob: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif glob[i] == "*":
            out.append("[^/]*")
            i += 1
        elif glob[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return re.compile("".join(out))


def changed_since(git: Git, ignored: str) -> Callable[[str], list[str]]:
    """``changed_paths`` for :func:`due_run` over a Git work tree: the files changed by the commits after
    ``since`` up to HEAD, the controller's own registry folder (``ignored``) left out: its decisions
    never trigger a run. A revision that is not in this history changed nothing that can be named."""

    def changed(since: str) -> list[str]:
        done = git.run("diff", "--name-only", "--no-renames", f"{since}..HEAD", "--", ".", check=False)
        if done.returncode != 0:
            return []
        return [line for line in done.stdout.splitlines() if line and not line.startswith(ignored)]

    return changed
