"""``ModelReconciler``: one QuantumModel against its registry in Git, the engine both shells drive.

``reconcile`` runs the model's steps (``steps.MODEL_STEPS``) with the Git recorder: each decision is
one commit by the controller; the commits are pushed at the end (rebased and retried on rejection).
If another controller decided about the same model first, this one's commits are dropped and it
decides again on the history that won. An unchanged repository makes no commit. ``plan`` runs the
same steps with the dry run: nothing is trained or written.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from controller.api.quantummodel import (
    PackReportSummary,
    QuantumModel,
    QuantumModelStatus,
    TrainingStatus,
    Usage,
    VersionRef,
)
from controller.engine import policy_report
from controller.engine import status as model_status
from controller.engine.decisions import LedgerKind, PlanAction
from controller.engine.reconcile import actions
from controller.engine.reconcile.intents import StepContext, Verdict, Watch, run_steps
from controller.engine.reconcile.recorder import Decision, DryRun, GitRecorder, decide_and_push
from controller.engine.reconcile.services import Services
from controller.engine.reconcile.state import Due, Observed, State, next_cron_tick, training
from controller.engine.reconcile.steps import MODEL_STEPS
from controller.engine.reconcile.workspace import MODEL_OWNER, Workspace
from controller.engine.registry.versions import Version

CHECK_NEW_CHAMPION_SECONDS = 1.0  # a champion no check has seen yet is checked this soon


def unwatched(status: QuantumModelStatus, champion: int) -> bool:
    """Whether no monitoring check has seen this champion yet (it was promoted after the last check)."""
    return status.monitoring is None or status.monitoring.version != champion


@dataclass(frozen=True)
class Plan:
    """What ``qmlops plan`` prints: the verdict of the last step the dry run reached. ``changes``:
    whether ``run`` would train or commit anything."""

    action: PlanAction
    reason: str
    version: int | None = None
    changes: bool = False
    floors: tuple[Any, ...] = ()  # controller.engine.policy.Source: what QuantumPolicies set, and which
    checks_due: tuple[str, ...] = ()  # the monitoring checks a run would run now (plan runs none)


@dataclass
class Outcome:
    status: QuantumModelStatus
    decisions: list[Decision]
    requeue_after: float | None


class ModelReconciler(Services):
    steps = MODEL_STEPS

    def context(self, observed: Observed) -> StepContext:
        return StepContext(observed, self.state(observed.model), self)

    # --- plan ---------------------------------------------------------------------------------

    def plan(self, observed: Observed) -> Plan:
        """What :meth:`reconcile` would do now, and why; nothing is trained or written."""
        ctx = self.context(observed)
        applied = run_steps(ctx, self.steps, DryRun(), model_status.Facts())
        retired = [i.version for i in applied.recorded(LedgerKind.RETIRED)]
        retiring = f"retire version{'s' if len(retired) != 1 else ''} {', '.join(str(n) for n in retired)}"
        verdict = applied.verdict or Verdict(PlanAction.NOTHING, "nothing to do")
        if retired and verdict.action is PlanAction.NOTHING:  # retiring is all a run would do
            verdict = Verdict(PlanAction.RETIRE, f"{retiring} (governance.retention.maxVersions)")
        reason = verdict.reason
        approvals = len(applied.recorded(LedgerKind.APPROVED))
        if approvals:
            reason += f" ({approvals} new approval{'s' if approvals != 1 else ''} to record)"
        if retired and verdict.action is not PlanAction.RETIRE:
            reason += f" (then {retiring})"
        changes = applied.changes
        if self.stale_report(ctx.state):
            reason += f" (then remove {policy_report.POLICY_FILE}: {policy_report.NO_PACK})"
            changes = True
        floors = ctx.state.policy.sources if ctx.state.policy is not None else ()
        watch = next((i for i in applied.intents if isinstance(i, Watch)), None)
        checks: tuple[str, ...] = ()
        if watch is not None:
            checks = watch.due.checks
            due = f"monitoring checks due ({', '.join(checks)}): {watch.due.reason}"
            if due not in reason:
                reason += f"; {due}"
        return Plan(verdict.action, reason, verdict.version, changes, floors, checks)

    def stale_report(self, state: State) -> bool:
        """Whether the model keeps a ``policy.json`` while no compliance pack applies to it any more."""
        return not policy_report.required_packs(state.spec) and self.registry.has_report(
            state.namespace, state.name, policy_report.POLICY_FILE
        )

    # --- reconcile ------------------------------------------------------------------------------

    def reconcile(
        self,
        observed: Observed,
        *,
        on_progress: Callable[[Any], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        may_train: bool = True,
    ) -> Outcome:
        """Carry out the plan: train, register, record, promote; commit each decision and push.
        With ``may_train`` false, a due training raises :class:`TrainingDue` instead of starting."""
        model = observed.model
        ns, name = model.metadata.namespace, model.metadata.name
        self.registry.sync()

        def attempt(recorder: GitRecorder) -> tuple[StepContext, Outcome]:
            ctx = self.context(observed)
            facts = model_status.Facts(  # what this attempt finds out
                generation=model.metadata.generation, source=observed.source, requested_at=observed.requested_at
            )
            run_steps(ctx, self.steps, recorder, facts)
            packs = self.policy_report(ctx.state, observed)
            return ctx, self._outcome(model, ctx.state, facts, packs)

        new_recorder = functools.partial(
            GitRecorder, on_progress=on_progress, should_stop=should_stop, may_train=may_train
        )
        decisions, (ctx, outcome) = decide_and_push(self.registry, ns, name, new_recorder, attempt)
        self.sweep(ctx)
        outcome.decisions = decisions
        return outcome

    def record_stopped(self, observed: Observed, stopped: Sequence[tuple[Due, dict[str, float]]]) -> list[Decision]:
        """Trainings stopped where they ran elsewhere (the operator's Jobs: the model deleted, or its spec
        moved on), each with what its checkpoint says its jobs spent: their ``stopped`` entries, made as
        a training stopped here makes its own (``actions.stopped``: cumulative, so only what no entry
        recorded yet counts, however often it is asked), committed and pushed now. Nothing else is
        decided."""
        model = observed.model
        ns, name = model.metadata.namespace, model.metadata.name
        self.registry.sync()

        def attempt(recorder: GitRecorder) -> None:
            ctx = self.context(observed)
            for due, usage in stopped:
                spent = actions.stopped(ctx.state, due, usage)
                if spent is not None:
                    recorder.record(ctx, spent)

        decisions, _ = decide_and_push(self.registry, ns, name, GitRecorder, attempt)
        return decisions

    # --- the outcome ------------------------------------------------------------------------------

    def policy_report(self, state: State, observed: Observed) -> PackReportSummary | None:
        """The compliance packs' report of the model as it now is, written to
        ``registry/<ns>/<model>/policy.json`` (its own commit) when it changed; its summary for the
        status. None when the model must pass no pack: then a ``policy.json`` left from when it had
        packs is removed from HEAD in a commit of its own (history keeps it)."""
        ns, name = state.namespace, state.name
        if not policy_report.required_packs(state.spec):  # packs removed: the last report leaves HEAD
            self.registry.write_report(ns, name, policy_report.POLICY_FILE, None, policy_report.REMOVED)
            return None
        report = policy_report.report_for(self.registry, ns, name, state.spec, observed.pipeline_backends)
        counts = report["summary"]
        subject = f"policy report: {counts['pass']} pass, {counts['fail']} fail, {counts['warn']} warn"
        self.registry.write_report(ns, name, policy_report.POLICY_FILE, policy_report.render(report), subject)
        return policy_report.summary_of(report)

    def _outcome(
        self, model: QuantumModel, state: State, facts: model_status.Facts, packs: PackReportSummary | None = None
    ) -> Outcome:
        ns, name = state.namespace, state.name
        if packs is not None and facts.policy is not None:
            facts.policy = facts.policy.model_copy(update={"report": packs})
        commits = self.registry.entry_commits(ns, name)
        registered = {e.version: e for e in state.ledger.of_kind(LedgerKind.REGISTERED)}

        def ref(version: Version | None) -> VersionRef | None:
            if version is None:
                return None
            entry = registered.get(version.number)
            commit = commits.get(entry.digest) if entry else None
            return VersionRef(
                version=version.number,
                digest=version.digest,
                metrics=version.scalar_metrics(),
                commit=commit.sha if commit else None,
                backend=version.backend,
            )

        facts.latest = ref(state.latest)
        facts.champion = ref(state.version(state.ledger.champion()))
        if facts.training is None and state.latest is not None:
            facts.training = TrainingStatus(backend=state.latest.backend)
        window = state.spec.governance.budget_window
        usage = state.ledger.usage(state.now, timedelta(days=state.spec.governance.budget_window_days))
        facts.usage = Usage(
            qpu_seconds=usage["qpuSeconds"],
            primitive_jobs=int(usage["primitiveJobs"]),
            shots=int(usage["shots"]),
            window=window,
        )
        status = model_status.build(model.status, facts, state.now)
        requeue = None
        if state.spec.training.schedule and not state.spec.suspend:
            requeue = max(1.0, (next_cron_tick(state.spec.training.schedule, state.now) - state.now).total_seconds())
        if state.spec.monitoring is not None and not state.spec.suspend:  # the next check is due then
            seconds = state.spec.monitoring.seconds
            if facts.champion is not None and unwatched(status, facts.champion.version):
                seconds = CHECK_NEW_CHAMPION_SECONDS  # promoted by this reconcile: checked on the next, at once
            requeue = min(requeue or seconds, seconds)
        return Outcome(status, [], requeue)

    # --- the workspaces ----------------------------------------------------------------------------

    def sweep(self, ctx: StepContext) -> list[str]:
        """Drop the workspaces this model no longer needs; the keys dropped. A training's folder goes
        once its version is in Git and pushed; the model's own trainings that are no longer due go
        too (the spec moved on). A folder in use (locked) or still due is never touched, nor another
        kind's (a pipeline's cells), nor anything while the reconcile could not tell what is due."""
        state = ctx.state
        pushed = not self.registry.git.unpushed()
        settled = self.registry.ledger(state.namespace, state.name).settled_digests()
        due: Due | None = ctx.notes.get("due")
        digests: tuple[str, str] | None = ctx.notes.get("digests")
        dropped = []
        workspaces = self.workspaces(state.namespace, state.name)
        for workspace in workspaces.all():
            if workspace.busy():
                continue
            raw = workspace.finished()
            if raw is not None and _artifact_digest(raw) in settled:
                drop = pushed  # registered or superseded in Git: kept until the push, in case it is dropped
            else:
                still_due = due is not None and workspace.key == due.key
                drop = not still_due and self._stale(workspace, raw, digests)
            if drop:
                workspace.clear()
                dropped.append(workspace.key)
        workspaces.drop_if_empty()
        return dropped

    @staticmethod
    def _stale(workspace: Workspace, raw: bytes | None, digests: tuple[str, str] | None) -> bool:
        """One of this model's own trainings, not registered, that is not the finished training of the
        spec and data the model has now (which waits to be registered)."""
        about = workspace.about()
        if digests is None or about.get("owner", MODEL_OWNER) != MODEL_OWNER:
            return False
        waiting = raw is not None and (about.get("specDigest"), about.get("datasetDigest")) == digests
        return not waiting


def _artifact_digest(raw: bytes) -> str | None:
    try:
        return str(training().ModelArtifact.from_json(raw).digest)
    except Exception:
        return None


Reconciler = ModelReconciler  # the name the shells knew it by
