"""A QuantumModel's reconcile, as steps (run in this order by ``ModelReconciler``):

1. ``govern``: ``spec.suspend`` stops everything; failed rules under ``enforce`` block (recorded once);
2. ``train``: when due (no version yet, the spec or the dataset changed, the schedule came due),
   train in the training's own workspace (resuming from its checkpoint) and register the version;
   a finished training waiting in its workspace is registered without training again;
3. ``record_approvals``: approvals found in Git history are recorded in the ledger, each once;
4. ``evaluate_gates``: the newest version's gates are judged (once) against the champion;
5. ``promote``: auto, manual, or a pin (forward or back);
6. ``retire``: versions beyond ``governance.retention.maxVersions`` are retired, oldest first, each by a
   ``retired`` entry whose commit removes the version's file from HEAD (history keeps it).

Each step is ``(StepContext) -> StepResult``: it reads, and returns intents and its verdict.
"""

from __future__ import annotations

from controller.api.quantummodel import PolicyFloor
from controller.engine import promotion
from controller.engine.decisions import LedgerKind, PlanAction
from controller.engine.pipelines.runs import runs_of
from controller.engine.reconcile import actions
from controller.engine.reconcile.intents import (
    PIN_RULE,
    Assess,
    Block,
    Fail,
    Intent,
    Promotion,
    RecordDecision,
    Register,
    Step,
    StepContext,
    StepResult,
    Suspend,
    Train,
    Training,
    Verdict,
    Watch,
)
from controller.engine.reconcile.state import Due, State, training_due
from controller.engine.registry import versions as version_files
from controller.engine.status import describe_failure

SUSPENDED = "spec.suspend is true: nothing is trained or promoted"


def govern(ctx: StepContext) -> StepResult:
    spec, ledger = ctx.state.spec, ctx.state.ledger
    verdict = ctx.services.governance(spec)
    report = verdict.report
    floors = ctx.state.policy.sources if ctx.state.policy is not None else ()
    if floors:  # the status says which values QuantumPolicies set (the cached report is not changed)
        shown = [PolicyFloor(field=f.field, value=f.text, source=f"QuantumPolicy/{f.policy}") for f in floors]
        report = report.model_copy(update={"floors": shown})
    intents: list[Intent] = [Assess(report)]
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
        return StepResult((registered,), finished_verdict(registered, waiting_due))
    failed = actions.failed_before(state.ledger, due, actions.resources_of(state))
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
        return StepResult((registered, done), finished_verdict(registered, due))
    resumed = " (resuming from its checkpoint)" if workspace.started() else ""
    return StepResult(
        (Training("running", f"training because {due.reason}"), Train(due)),
        Verdict(PlanAction.TRAIN, f"train because {due.reason}{resumed}"),
    )


def finished_verdict(registered: Register, due: Due) -> Verdict:
    """What a finished training waiting in its workspace comes to: its registration, or, when another
    controller registered the same training meanwhile, a ``superseded`` record."""
    if registered.decision.kind == LedgerKind.SUPERSEDED:
        why = f"a finished training ({due.reason}) was registered as version {registered.decision.version} meanwhile"
        return Verdict(PlanAction.NOTHING, f"{why}: recorded as superseded")
    return Verdict(PlanAction.REGISTER, f"a finished training ({due.reason}) is waiting to be registered")


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
    held = held_by_drift(state)
    if held is not None:
        return StepResult((Promotion("blocked", held),), Verdict(PlanAction.BLOCK, held))
    pin = state.spec.promotion.pin
    asked_by = state.policy.pin_requires_approval if state.policy is not None else None
    if pin is not None and asked_by and pin != state.ledger.champion():
        needed = max(1, state.spec.promotion.required_approvals)
        signed_only = state.spec.governance.require_signed_approvals
        got = len(state.ledger.approvers(pin, signed_only=signed_only, at=state.now))
        if got < needed:
            reason = (
                f"promotion.pin {pin} needs {needed} approval{'s' if needed != 1 else ''} of version {pin} "
                f"(QuantumPolicy {asked_by}: pinRequiresApproval), it has {got}"
            )
            intents: list[Intent] = [Block((PIN_RULE,), reason)]
            if not state.ledger.last_blocked_with(reason):
                intents.append(RecordDecision(LedgerKind.BLOCKED, pin, reason, {"rules": [PIN_RULE]}))
            return StepResult(tuple(intents), Verdict(PlanAction.BLOCK, reason, pin))
    # a pin may name any version; otherwise only the model's own and the pipelines' selected ones
    numbers = state.numbers if pin is not None else state.candidates
    step = promotion.decide(
        state.spec, state.ledger, numbers, namespace=state.namespace, name=state.name, now=state.now
    )
    intents, verdict = actions.promote(state, step)
    return StepResult(tuple(intents), verdict)


def retire(ctx: StepContext) -> StepResult:
    """``governance.retention.maxVersions`` (the spec's or a QuantumPolicy floor's, the smaller): while
    the model keeps more versions, the oldest that nothing needs is retired. Never retired: the
    champion, the version ``promotion.pin`` names, the newest version, the newest the model's own
    training is measured against (its next training would otherwise start again), and any version
    a pipeline run in progress registered, evaluated or selected."""
    state = ctx.state
    retention = state.spec.governance.retention
    if retention is None or len(state.versions) <= retention.max_versions:
        return StepResult()
    kept = retention.max_versions
    needed = needed_versions(state, ctx.notes.get("digests"))
    excess = len(state.versions) - kept
    source = "spec"
    if state.policy is not None:
        source = next(
            (
                f"QuantumPolicy/{f.policy}"
                for f in state.policy.sources
                if f.field == "governance.retention.maxVersions"
            ),
            source,
        )
    intents: list[Intent] = []
    for version in state.versions:  # oldest first
        if excess <= 0:
            break
        if version.number in needed:
            continue
        excess -= 1
        message = f"retired version {version.number}: retention.maxVersions is {kept} ({source})"
        data = {"versionDigest": version.digest, "maxVersions": kept, "source": source}
        removes = (version_files.file_name(version.number),)
        intents.append(RecordDecision(LedgerKind.RETIRED, version.number, message, data, removes=removes))
    return StepResult(tuple(intents))


def needed_versions(state: State, digests: tuple[str, str] | None) -> set[int]:
    """The versions retention leaves alone (see :func:`retire`)."""
    needed = {n for n in (state.ledger.champion(), state.spec.promotion.pin) if n is not None}
    if state.latest is not None:
        needed.add(state.latest.number)
    own = [v for v in state.versions if v.pipeline is None]
    if own:
        needed.add(own[-1].number)
    if digests is not None and (measured := state.trained_from(digests[0])) is not None:
        needed.add(measured.number)
    pipelines = {e.pipeline for e in state.ledger.of_kind(LedgerKind.RUN_STARTED) if e.pipeline}
    for pipeline in pipelines:
        for run in runs_of(state.ledger, pipeline):
            if run.open:
                needed.update(e.version for e in run.entries if e.version is not None)
                for record in run.steps.values():
                    cells = record.outputs.get("cells") or {}
                    needed.update(int(v) for v in cells.values() if isinstance(v, int))
    return needed


def watch(ctx: StepContext) -> StepResult:
    """``spec.monitoring``: the champion's checks when due, as a :class:`Watch` the effects carry out
    (``actions.watched``: each drift not acted on before, same check, same calibration, dataset or
    feedback, same champion, is a ``drift-detected`` entry with its evidence and the actions it asks
    for; the train step retrains on it, promote holds on it, the shells alert). The dry run only says
    which checks are due and why."""
    state = ctx.state
    champion = state.version(state.ledger.champion())
    if state.spec.monitoring is None or champion is None:
        return StepResult()
    due = ctx.services.watch_due(ctx.observed.model, champion)
    if due is None:
        return StepResult()
    why = f"monitoring checks due ({', '.join(due.checks)}): {due.reason}"
    return StepResult((Watch(champion, due),), Verdict(PlanAction.NOTHING, why, champion.number))


def held_by_drift(state: State) -> str | None:
    """``onDrift: blockPromotion``: the drift that holds promotions until a human pins a version or
    approves one (an approval recorded after the drift), or None."""
    drifts = [
        e for e in state.ledger.of_kind(LedgerKind.DRIFT_DETECTED) if "blockPromotion" in (e.data.get("actions") or [])
    ]
    if not drifts or state.spec.promotion.pin is not None:
        return None
    last = drifts[-1]
    after = state.ledger.entries[state.ledger.entries.index(last) + 1 :]
    if any(e.kind == LedgerKind.APPROVED for e in after):
        return None
    return (
        f"promotions are held by a drift (monitoring.onDrift blockPromotion): {last.message}; pin or approve a version"
    )


MODEL_STEPS: tuple[Step, ...] = (govern, watch, train, record_approvals, evaluate_gates, promote, retire)
