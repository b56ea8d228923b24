"""The step framework: a reconcile is a sequence of small steps with one signature.

A step reads the state in its :class:`StepContext` and returns a :class:`StepResult`: the intents it
wants carried out, what it would tell ``qmlops plan`` (its :class:`Verdict`), and whether the steps
after it run. Steps never write: the :class:`Effects` they are run with do (see ``recorder.py``), and
``plan`` runs the very same steps with effects that write nothing, so plan and run cannot disagree.

Adding a kind (the next is QuantumPipeline) means writing its steps over its own state and running them
with :func:`run_steps`; the intents, the effects and the shared actions are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.api.quantummodel import TrainingStatus
from controller.engine.decisions import LedgerKind, PlanAction
from controller.engine.reconcile.services import Services
from controller.engine.reconcile.state import Due, Observed, State
from controller.engine.status import Facts, PromotionState, TrainingState

# --- intents: what a step wants done ----------------------------------------------------------------


@dataclass(frozen=True)
class RecordDecision:
    """Write one ledger entry (and ``files`` beside it, e.g. a version manifest) as one commit."""

    kind: LedgerKind
    version: int | None
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    trailers: tuple[tuple[str, str], ...] = ()  # beyond the model's, version's, decision's and entry's
    shared: dict[str, bytes] = field(default_factory=dict)  # content-addressed registry files (calibrations)
    removes: tuple[str, ...] = ()  # files of the model's folder that leave HEAD with it (a retired version's)


@dataclass(frozen=True)
class Train:
    """Train for ``due`` (resuming from its checkpoint); the effects answer with the intents that
    follow: the registration of the artifact, or the failure."""

    due: Due


@dataclass(frozen=True)
class Register:
    """Register the finished training of ``due`` as a version: ``decision`` is its ledger entry with
    the version manifest as its file."""

    due: Due
    decision: RecordDecision


@dataclass(frozen=True)
class Suspend:
    """``spec.suspend``: nothing is trained or promoted."""


@dataclass(frozen=True)
class Assess:
    """Governance's report on the spec, for the status."""

    report: Any


@dataclass(frozen=True)
class Block:
    """Rules that stop training or promotion until the spec changes (``promotion.pin`` included)."""

    rules: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class Fail:
    """The training failed (or cannot start): no step after this one runs."""

    message: str


@dataclass(frozen=True)
class Watch:
    """Run the champion's monitoring checks (``due``: which and why, a ``services.WatchDue``); the
    effects answer with what follows: the report (:class:`Watched`) and a ``drift-detected`` record per
    drift not acted on before. The dry run (``plan``) carries none out: a noisy replay is not planning."""

    champion: Any  # registry.versions.Version
    due: Any


@dataclass(frozen=True)
class Watched:
    """The monitoring checks ran on the champion: their report (``monitoring.Report``), for the status."""

    report: Any


@dataclass(frozen=True)
class Training:
    """The training state to show: ``running`` while a training goes, ``done`` once registered.
    ``job`` names where a training runs elsewhere (its executor's Job): the steps stop there until
    it has finished."""

    state: TrainingState
    message: str
    job: str | None = None


@dataclass(frozen=True)
class Promotion:
    """Where promotion stands: champion, waiting (for approvals), gates-failed, none."""

    state: PromotionState
    message: str


@dataclass(frozen=True)
class TrainCells:
    """Train a pipeline step's cells (at most ``parallelism`` at a time), each in its own workspace,
    and register every artifact as a version that names its run, step and cell. ``cells`` are the
    engine's ``CellTraining`` objects (see ``reconcile/pipeline.py``)."""

    step: str
    cells: tuple[Any, ...]
    parallelism: int
    retries: int
    backoff: float
    fail_fast: bool


@dataclass(frozen=True)
class EvaluateVersions:
    """Score versions on backends (one primitive job each) and record each result as ``evaluated``.
    ``pairs`` are ``(version, backend)``; ``parallelism``: how many run at once when the executor
    runs them elsewhere (the operator's Jobs; here they run one after another)."""

    step: str
    pairs: tuple[tuple[int, str], ...]
    shots: int | None
    retries: int
    backoff: float
    parallelism: int = 1


Work = (
    Train | Register | TrainCells | EvaluateVersions | Watch
)  # intents the effects carry out (or a dry run skips or stops at)
Intent = RecordDecision | Work | Suspend | Assess | Block | Fail | Training | Promotion | Watched
WRITES = (RecordDecision, Train, Register, TrainCells, EvaluateVersions)  # what changes something (plan's ``changes``)


@dataclass(frozen=True)
class Verdict:
    """What a step would tell ``qmlops plan``: the action and why."""

    action: PlanAction
    reason: str
    version: int | None = None


@dataclass(frozen=True)
class StepResult:
    intents: tuple[Intent, ...] = ()
    verdict: Verdict | None = None
    stop: bool = False  # the steps after this one do not run


# --- the context a step reads ---------------------------------------------------------------------------


@dataclass
class StepContext:
    """What every step reads: the observed object, the registry's state (kept current by the
    effects), the reconciler's services, and ``notes`` that steps leave for later steps."""

    observed: Observed
    state: State
    services: Services  # the reconciler: registry, trainer, clock, digests, governance, workspaces
    notes: dict[str, Any] = field(default_factory=dict)


Step = Callable[[StepContext], StepResult]


class Effects(Protocol):
    """Carries intents out: the recorder (Git or nothing) and the executor (trains or does not)."""

    def record(self, ctx: StepContext, intent: RecordDecision) -> None:
        """Write the decision and bring ``ctx.state`` up to date with it."""

    def work(self, ctx: StepContext, intent: Work) -> list[Intent] | None:
        """Train, register, evaluate or check; the intents that follow (a training's registration or
        failure, a check's report and drifts), or None: the steps stop here (``plan``: what follows a
        piece of work depends on its result)."""


@dataclass
class Applied:
    """Everything a run of steps did: the intents in order, the last verdict, and the facts the
    status is built from (set here and nowhere else)."""

    facts: Facts
    intents: list[Intent] = field(default_factory=list)
    verdict: Verdict | None = None
    halted: bool = False

    @property
    def changes(self) -> bool:
        return any(isinstance(i, WRITES) for i in self.intents)

    def recorded(self, kind: LedgerKind) -> list[RecordDecision]:
        return [i for i in self.intents if isinstance(i, RecordDecision) and i.kind == kind]


def run_steps(ctx: StepContext, steps: Sequence[Step], effects: Effects, facts: Facts) -> Applied:
    """Run ``steps`` in order, each intent applied by ``effects`` before the next step reads the state."""
    applied = Applied(facts)
    for step in steps:
        result = step(ctx)
        if result.verdict is not None:
            applied.verdict = result.verdict
        pending = list(result.intents)
        while pending:
            intent = pending.pop(0)
            applied.intents.append(intent)
            if isinstance(intent, RecordDecision):
                effects.record(ctx, intent)
            elif isinstance(intent, Train | Register | TrainCells | EvaluateVersions | Watch):
                follow = effects.work(ctx, intent)
                if follow is None:  # the effects stop here: nothing after this piece of work is known
                    applied.halted = True
                    break
                pending[:0] = follow
            else:
                summarise(intent, facts)
                # a failure is still recorded; a training running elsewhere has nothing after it yet
                elsewhere = isinstance(intent, Training) and intent.job is not None
                applied.halted = applied.halted or isinstance(intent, Fail) or elsewhere
        if result.stop or applied.halted:
            break
    return applied


def summarise(intent: Intent, facts: Facts) -> None:
    """The one place intents become the facts that the status (``status.build``) is made of."""
    match intent:
        case Suspend():
            facts.suspended = True
        case Assess(report):
            facts.policy = report
        case Block(rules, message):
            facts.blockers, facts.block_message = list(rules), message
            if rules == (PIN_RULE,):
                facts.promotion_state, facts.promotion_message = "blocked", message
        case Fail(message):
            facts.training_state, facts.training_message = "failed", message
        case Training(state, message, job):
            facts.training_state, facts.training_message = state, message
            if job is not None:
                facts.training = TrainingStatus(job=job)
        case Promotion(state, message):
            facts.promotion_state, facts.promotion_message = state, message
        case Watched(report):
            facts.monitoring = report


PIN_RULE = "promotion.pin"
