"""A QuantumModel's reconcile, as steps (run in this order by ``ModelReconciler``):

1. ``govern``: ``spec.suspend`` stops everything; failed rules under ``enforce`` block (recorded once);
2. ``train``: when due (no version yet, the spec or the dataset changed, the schedule came due),
   train in the training's own workspace (resuming from its checkpoint) and register the version;
   a finished training waiting in its workspace is registered without training again;
3. ``record_approvals``: approvals found in Git history are recorded in the ledger, each once;
4. ``evaluate_gates``: the newest version's gates are judged (once) against the champion;
5. ``promote``: auto, manual, or a pin (forward or back).

Each step is ``(StepContext) -> StepResult``: it reads, and returns intents and its verdict.
"""

from __future__ import annotations

from controller.engine import promotion
from controller.engine.decisions import LedgerKind, PlanAction
from controller.engine.reconcile import actions
from controller.engine.reconcile.intents import (
    Assess,
    Block,
    Fail,
    Intent,
    RecordDecision,
    Step,
    StepContext,
    StepResult,
    Suspend,
    Train,
    Training,
    Verdict,
)
from controller.engine.reconcile.state import training_due
from controller.engine.status import describe_failure

SUSPENDED = "spec.suspend is true: nothing is trained or promoted"


def govern(ctx: StepContext) -> StepResult:
    spec, ledger = ctx.state.spec, ctx.state.ledger
    verdict = ctx.services.governance(spec)
    intents: list[Intent] = [Assess(verdict.report)]
    if spec.suspend:
        return StepResult((*intents, Suspend()), Verdict(PlanAction.SUSPEND, SUSPENDED), stop=True)
    if verdict.blockers:
        intents.append(Block(verdict.blockers, verdict.message))
        if not ledger.last_blocked_with(verdict.message):
            intents.append(RecordDecision(LedgerKind.BLOCKED, None, verdict.message, {"rules": list(verdict.blockers)}))
        return StepResult(tuple(intents), Verdict(PlanAction.BLOCK, verdict.message), stop=True)
    return StepResult(tuple(intents))


def train(ctx: StepContext) -> StepResult:
    state, services = ctx.state, ctx.services
    try:
        spec_digest, dataset_digest = services.digests(state.spec)
    except Exception as err:
        message = f"the training data cannot be prepared: {describe_failure(err)}"
        intents = actions.failure(state, message, "", "", None)
        return StepResult(tuple(intents), Verdict(PlanAction.TRAIN, message), stop=True)
    workspaces = services.workspaces(state.namespace, state.name)
    due = training_due(state, ctx.observed.source, spec_digest, dataset_digest)
    ctx.notes["digests"], ctx.notes["due"] = (spec_digest, dataset_digest), due
    if due is None:
        waiting = workspaces.waiting(spec_digest, dataset_digest)
        waiting_due = waiting.due() if waiting else None
        raw = waiting.finished() if waiting else None
        if waiting_due is None or raw is None:
            return StepResult()
        registered = actions.registration(ctx, waiting_due, raw)
        if registered is None:
            return StepResult()
        why = f"a finished training ({waiting_due.reason}) is waiting to be registered"
        return StepResult((registered,), Verdict(PlanAction.REGISTER, why))
    failed = actions.failed_before(state.ledger, due)
    if failed is not None:
        retry = "change the spec to retry"
        return StepResult(
            (Fail(f"training failed: {failed}; {retry}"),),
            Verdict(PlanAction.NOTHING, f"training for {due.reason} failed: {failed}; {retry}"),
            stop=True,
        )
    workspace = workspaces.of(due.key)
    raw = workspace.finished()
    if raw is not None:
        done = Training("done", f"trained because {due.reason}")
        registered = actions.registration(ctx, due, raw)
        if registered is None:
            return StepResult((done,))
        why = f"a finished training ({due.reason}) is waiting to be registered"
        return StepResult((registered, done), Verdict(PlanAction.REGISTER, why))
    resumed = " (resuming from its checkpoint)" if workspace.started() else ""
    return StepResult(
        (Training("running", f"training because {due.reason}"), Train(due)),
        Verdict(PlanAction.TRAIN, f"train because {due.reason}{resumed}"),
    )


def record_approvals(ctx: StepContext) -> StepResult:
    return StepResult(tuple(actions.approval_records(ctx.services, ctx.state)))


def evaluate_gates(ctx: StepContext) -> StepResult:
    state = ctx.state
    candidates = state.candidates
    latest = state.version(candidates[-1]) if candidates else None
    if latest is None or state.ledger.gate_entry(latest.number) is not None:
        return StepResult()
    return StepResult((actions.gate_decision(ctx.services, state, latest),))


def promote(ctx: StepContext) -> StepResult:
    state = ctx.state
    # a pin may name any version; otherwise only the model's own and the pipelines' selected ones
    numbers = state.numbers if state.spec.promotion.pin is not None else state.candidates
    step = promotion.decide(state.spec, state.ledger, numbers, namespace=state.namespace, name=state.name)
    intents, verdict = actions.promote(state, step)
    return StepResult(tuple(intents), verdict)


MODEL_STEPS: tuple[Step, ...] = (govern, train, record_approvals, evaluate_gates, promote)
