"""The effects steps are run with: the Git recorder (``reconcile``) and the dry run (``plan``).

:class:`GitRecorder` writes each decision as one commit (``Registry.record``), reads the model's ledger
and versions again after it, and trains when a step asks; :class:`DryRun` writes nothing, extends the
ledger in memory so that the steps after a decision see it as it would be, and stops at the first
piece of work (a training, a registration), whose result it cannot know without doing it; due
monitoring checks it skips (their replays are the expensive part of a reconcile), and the steps go on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from controller.engine.decisions import LedgerKind
from controller.engine.reconcile import actions
from controller.engine.reconcile.intents import Intent, RecordDecision, Register, StepContext, Train, Watch, Work
from controller.engine.reconcile.state import training
from controller.engine.registry.ledger import Ledger, draft, format_time
from controller.engine.registry.store import TRAILER_MODEL, Registry

ATTEMPTS = 3  # decisions made again at most this often when another controller wins the race
A = TypeVar("A")  # what an attempt at a model's decisions answers besides them


@dataclass(frozen=True)
class Decision:
    """One ledger entry written (the operator turns each into a Kubernetes Event); ``commit`` is the
    entry's digest until the push, then the sha of the commit that carries it."""

    kind: LedgerKind
    version: int | None
    message: str
    commit: str | None


class GitRecorder:
    def __init__(
        self,
        *,
        on_progress: Callable[[Any], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        may_train: bool = True,
    ) -> None:
        self.decisions: list[Decision] = []
        self.on_progress, self.should_stop, self.may_train = on_progress, should_stop, may_train

    def record(self, ctx: StepContext, intent: RecordDecision) -> None:
        state, registry = ctx.state, ctx.services.registry
        recorded = registry.record(
            state.namespace,
            state.name,
            at=format_time(ctx.services.now()),
            kind=intent.kind,
            version=intent.version,
            message=intent.message,
            data=intent.data,
            files=intent.files,
            trailers=intent.trailers,
            shared=intent.shared,
            removes=intent.removes,
        )
        # the commit is found again by the entry's digest after the push (a rebase changes shas)
        self.decisions.append(Decision(intent.kind, intent.version, intent.message, recorded.entry.digest))
        state.ledger, state.versions = registry.acted_on(state.namespace, state.name)

    def work(self, ctx: StepContext, intent: Work) -> list[Intent] | None:
        if isinstance(intent, Register):
            self.record(ctx, intent.decision)
            return []
        if isinstance(intent, Watch):
            return actions.watched(ctx, intent)
        if not isinstance(intent, Train):
            raise TypeError(f"{type(intent).__name__} is carried out by a pipeline's recorder")
        try:
            return actions.train(
                ctx, intent.due, on_progress=self.on_progress, should_stop=self.should_stop, may_train=self.may_train
            )
        except Exception as err:
            if isinstance(err, training().TrainingStopped):  # what it spent so far is recorded, then it stops
                spent = actions.stopped(ctx.state, intent.due, getattr(err, "usage", None))
                if spent is not None:
                    self.record(ctx, spent)
            raise


R = TypeVar("R", bound="GitRecorder")


def decide_and_push(
    registry: Registry, namespace: str, name: str, recorder: Callable[[], R], attempt: Callable[[R], A]
) -> tuple[list[Decision], A]:
    """A model's decisions made by ``attempt`` on a new ``recorder``, committed and pushed; made again on
    the history that won when the remote dropped one of them (another controller's push came first), at
    most ATTEMPTS times. A training stopped midway still pushes what was recorded before it stopped
    (its spending), then stops. The decisions, each with the commit that carries it, and what the last
    attempt answered."""
    for _ in range(ATTEMPTS):
        registry.discard_uncommitted(namespace, name)
        made = recorder()
        try:
            answer = attempt(made)
        except Exception as err:
            if isinstance(err, training().TrainingStopped) and made.decisions:
                with contextlib.suppress(Exception):  # else the next reconcile pushes it
                    registry.publish()
            raise
        published = registry.publish()
        if not any(f"{namespace}/{name}" in c.trailer(TRAILER_MODEL) for c in published.dropped):
            break
    commits = registry.entry_commits(namespace, name)
    decisions = [
        Decision(d.kind, d.version, d.message, commits[d.commit].sha if d.commit in commits else None)
        for d in made.decisions
    ]
    return decisions, answer


class DryRun:
    def record(self, ctx: StepContext, intent: RecordDecision) -> None:
        state = ctx.state
        entry = draft(
            state.ledger.last,
            at=format_time(state.now),
            kind=intent.kind,
            model=state.key,
            version=intent.version,
            message=intent.message,
            data=intent.data,
        )
        state.ledger = Ledger((*state.ledger.entries, entry))

    def work(self, ctx: StepContext, intent: Work) -> list[Intent] | None:
        if isinstance(intent, Watch):
            return []  # the checks are due (plan says which and why); running them is not planning
        return None
