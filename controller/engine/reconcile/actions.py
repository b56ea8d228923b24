"""The actions every kind of reconciler shares: train-and-register, evaluate (the gates), approve,
promote. Each reads state and returns intents; the effects carry them out (``recorder.py``). A
QuantumModel's steps use them for its own training; a QuantumPipeline's steps will use them for its
cells (train-and-register under their own training keys) and for the version it selects (evaluate,
promote through the model's gates and approvals).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from controller.api.quantummodel import QuantumModelSpec
from controller.engine import promotion
from controller.engine.decisions import LedgerKind, PlanAction
from controller.engine.errors import RetryableError
from controller.engine.reconcile.executor import Running, TrainingRequest
from controller.engine.reconcile.intents import (
    PIN_RULE,
    Block,
    Fail,
    Intent,
    Promotion,
    RecordDecision,
    Register,
    StepContext,
    Training,
    Verdict,
    Watch,
    Watched,
)
from controller.engine.reconcile.services import Services
from controller.engine.reconcile.state import Due, State, training
from controller.engine.reconcile.workspace import MODEL_OWNER
from controller.engine.registry import approvals as git_approvals
from controller.engine.registry import versions as version_files
from controller.engine.registry.ledger import Entry, Ledger, format_time
from controller.engine.registry.store import TRAILER_PIPELINE, TRAILER_RUN
from controller.engine.registry.versions import Provenance, Version
from controller.engine.status import PromotionState, describe_failure
from controller.engine.text import scrub


class TrainingDue(RetryableError):
    """A reconcile told not to train reached a training that is due. Nothing was written: whoever
    may train (the operator's training daemon) reconciles the model again."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"training because {reason}")
        self.reason = reason


# --- train and register -------------------------------------------------------------------------------


def failed_before(ledger: Ledger, due: Due, resources: dict[str, Any] | None = None) -> str | None:
    """The failure already recorded for this very training (same key) with these
    ``training.resources``, if any: resources are no part of the key (they change nothing trained), but
    a training that failed for its pod's resources (OOMKilled) is tried again when they change."""
    for entry in reversed(ledger.entries):
        if entry.kind == LedgerKind.REGISTERED and entry.pipeline is None:
            return None
        if entry.kind == LedgerKind.FAILED and entry.data.get("trainingKey") == due.key:
            if (entry.data.get("resources") or None) != (resources or None):
                return None
            return entry.message
    return None


def resources_of(state: State) -> dict[str, Any] | None:
    """The spec's training.resources, as a failure records them."""
    wanted = state.spec.training.resources
    return wanted.model_dump(mode="json", by_alias=True, exclude_none=True) if wanted is not None else None


def failure(
    state: State,
    message: str,
    spec_digest: str,
    dataset_digest: str,
    due: Due | None,
    usage: dict[str, float] | None = None,
) -> list[Intent]:
    """A training that failed (or could not start): the status says so; the ledger too, unless its
    newest entry says it already and this attempt spent nothing. ``usage``: what its jobs spent, which
    the entry keeps so that it counts against governance.qpuBudgetSeconds."""
    intents: list[Intent] = [Fail(message)]
    last = state.ledger.last_own
    spent = usage is not None and any(usage.get(k) for k in ("qpuSeconds", "shots", "primitiveJobs"))
    resources = resources_of(state)
    said = last is not None and last.kind == LedgerKind.FAILED and last.message == scrub(message)
    if spent or not said or last is None or (last.data.get("resources") or None) != resources:
        data: dict[str, Any] = {
            "specDigest": spec_digest,
            "datasetDigest": dataset_digest,
            "trainingKey": due.key if due else None,
        }
        if usage:
            data["usage"] = spent_of(usage)
        if resources:
            data["resources"] = resources
        intents.append(RecordDecision(LedgerKind.FAILED, None, message, data))
    return intents


def stopped(
    state: State, due: Due, usage: dict[str, float] | None, pipeline: dict[str, Any] | None = None
) -> RecordDecision | None:
    """A training stopped mid-way (Ctrl-C, shutdown, the model or its pipeline deleted): a ``stopped``
    entry with what its jobs spent so far (cumulative over its resumes, as its checkpoint keeps it), so
    that it counts against governance.qpuBudgetSeconds now and not only when the training resumes; None
    when it spent no QPU time since the last time it stopped (a simulator's: a Ctrl-C writes nothing to
    Git). ``pipeline``: ``{name, run, step, cell}`` of the pipeline cell that was training, recorded in
    the entry and its commit's trailers. The one way every executor's stopped training is recorded: it
    raises ``TrainingStopped`` with its ``usage``, and the model's recorder or the pipeline's cells call
    this."""
    if not usage:
        return None
    spent = spent_of(usage)
    before = state.ledger.stopped_usage(due.key)
    if spent["qpuSeconds"] <= before.get("qpuSeconds", 0.0):
        return None
    jobs = int(spent["primitiveJobs"])
    message = (
        f"training stopped (it was training because {due.reason}) after {jobs} job{'s' if jobs != 1 else ''} "
        f"and {spent['qpuSeconds']:.1f} QPU seconds; it resumes from its checkpoint"
    )
    return training_entry(LedgerKind.STOPPED, state, due, message, spent, pipeline)


def spent_of(usage: dict[str, Any]) -> dict[str, float]:
    """What a training's jobs spent, as its ledger entry keeps it."""
    return {k: float(usage.get(k, 0.0) or 0.0) for k in ("qpuSeconds", "primitiveJobs", "shots")}


def training_entry(
    kind: LedgerKind,
    state: State,
    due: Due,
    message: str,
    usage: dict[str, Any],
    pipeline: dict[str, Any] | None = None,
) -> RecordDecision:
    """The entry of a training that ended without a version (``stopped``, a pipeline cell's ``failed``):
    which training, why it ran, what its jobs spent; ``pipeline``: ``{name, run, step, cell}`` of the
    pipeline cell it was, recorded in the entry and its commit's trailers."""
    data: dict[str, Any] = {
        "specDigest": due.spec_digest,
        "datasetDigest": due.dataset_digest,
        "trainingKey": due.key,
        "reason": due.reason,
        "usage": spent_of(usage),
    }
    trailers: tuple[tuple[str, str], ...] = ()
    if pipeline is not None:
        data["pipeline"] = pipeline
        trailers = run_trailers(state, pipeline)
    return RecordDecision(kind, None, message, data, trailers=trailers)


def registration(ctx: StepContext, due: Due, raw: bytes, pipeline: dict[str, Any] | None = None) -> Register | None:
    """The registration of a finished training's artifact, or None when its digest is registered
    already (a crash between the commit and the workspace's cleanup: never twice). ``pipeline``:
    ``{name, run, step, cell}`` of the pipeline run that trained it, recorded in the version."""
    state, services = ctx.state, ctx.services
    artifact = training().ModelArtifact.from_json(raw)
    digest = str(artifact.digest)
    if digest in state.ledger.settled_digests():
        return None
    first = state.ledger.registered_since(due.key, due.after)
    if first is not None:
        return superseded(due, digest, artifact, first, pipeline)
    source = ctx.observed.source
    on_disk = services.registry.version_numbers(state.namespace, state.name)  # a number is never reused
    number = version_files.next_number([*state.numbers, *on_disk], state.ledger.versions())
    manifest = version_files.manifest(
        namespace=state.namespace,
        name=state.name,
        number=number,
        registered_at=format_time(services.now()),
        source=Provenance(source.repository, source.revision, source.path, source.author),
        spec_digest=due.spec_digest,
        dataset_digest=due.dataset_digest,
        artifact=json.loads(raw),
        artifact_digest=digest,
        pipeline=pipeline,
    )
    version = Version(number, manifest)
    metrics = version.scalar_metrics()
    accuracy = f" (accuracy {metrics['accuracy']:.3f})" if "accuracy" in metrics else ""
    data = {
        "versionDigest": version.digest,
        "artifactDigest": digest,
        "specDigest": due.spec_digest,
        "datasetDigest": due.dataset_digest,
        "trainingKey": due.key,
        "reason": due.reason,
        "source": version.source,
        "backend": version.backend,
        "metrics": metrics,
        "usage": usage_of(artifact),
    }
    trailers: tuple[tuple[str, str], ...] = ()
    if pipeline is not None:
        data["pipeline"] = pipeline
        trailers = run_trailers(state, pipeline)
    files = {version_files.file_name(number): version_files.encode(manifest)}
    message = f"registered version {number}{accuracy}, trained because {due.reason}"
    shared = calibration_snapshot(ctx, due, artifact)
    return Register(due, RecordDecision(LedgerKind.REGISTERED, number, message, data, files, trailers, shared))


def superseded(due: Due, digest: str, artifact: Any, first: Entry, pipeline: dict[str, Any] | None) -> Register:
    """Another controller (a peer replica, a second runner) registered this very training while this
    one ran: its artifact is not registered again, and what it spent is recorded against the budget."""
    message = (
        f"training {due.key} ({due.reason}) finished after version {first.version} had registered the same "
        "training: not registered again"
    )
    data: dict[str, Any] = {
        "trainingKey": due.key,
        "artifactDigest": digest,
        "registeredAs": first.version,
        "usage": usage_of(artifact),
    }
    if pipeline is not None:
        data["pipeline"] = pipeline
    return Register(due, RecordDecision(LedgerKind.SUPERSEDED, first.version, message, data))


def calibration_snapshot(ctx: StepContext, due: Due, artifact: Any) -> dict[str, bytes]:
    """The calibration snapshot the version was trained under, for ``registry/calibrations/<device>/
    <digest>.json`` (kept once per snapshot, so an auditor recomputes the ESP from Git alone)."""
    hardware = (artifact.manifest.get("lineage") or {}).get("calibration")
    if not isinstance(hardware, dict):
        return {}
    registry = ctx.services.registry
    device, digest = str(hardware.get("device", "")), str(hardware.get("digest", ""))
    path = registry.calibration_path(device, digest)
    if registry.calibration(device, digest) is not None:
        return {}
    folder = ctx.services.workspaces(ctx.state.namespace, ctx.state.name).of(due.key).checkpoint_dir
    snapshot = importlib.import_module("controller.engine.training.calibration").recall(hardware, folder)
    return {path: snapshot.to_bytes()} if snapshot is not None else {}


def run_trailers(state: State, pipeline: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The trailers of a commit a pipeline run makes: which pipeline, which run."""
    return (
        (TRAILER_PIPELINE, f"{state.namespace}/{pipeline['name']}"),
        (TRAILER_RUN, str(pipeline["run"])),
    )


def train(
    ctx: StepContext,
    due: Due,
    *,
    on_progress: Callable[[Any], None] | None,
    should_stop: Callable[[], bool] | None,
    may_train: bool,
) -> list[Intent]:
    """Train for ``due`` in its own workspace (resuming from its checkpoint) with the reconciler's
    executor, keep the artifact beside it, and register it; a failed training is a failure, a stopped
    one (Ctrl-C, shutdown) raises; a training still running elsewhere (a Job) is shown as running and
    the reconcile stops there."""
    state = ctx.state
    if not may_train:
        raise TrainingDue(due.reason)
    try:
        raw = train_in_workspace(ctx.services, state, due, on_progress=on_progress, should_stop=should_stop)
    except Exception as err:
        if isinstance(err, training().TrainingStopped | RetryableError):
            raise  # stopped: not a failure; retryable (a Job replaced): the shell reconciles again
        usage = getattr(err, "usage", None)  # a TrainingError's: what its jobs spent
        return failure(state, describe_failure(err), due.spec_digest, due.dataset_digest, due, usage)
    if isinstance(raw, Running):
        return [Training("running", raw.message, job=raw.job)]
    assert raw is not None  # started when not found
    registered = registration(ctx, due, raw)
    return [*([registered] if registered else []), Training("done", f"trained because {due.reason}")]


def train_in_workspace(
    services: Services,
    state: State,
    due: Due,
    *,
    owner: str = MODEL_OWNER,
    on_progress: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    start: bool = True,
) -> bytes | Running | None:
    """The artifact of the training ``due`` of ``state.spec``: trained by the reconciler's executor in
    the training's own workspace under its lock (resuming from its checkpoint), or found there
    finished; :class:`Running` while it runs elsewhere (a Job); None when ``start`` is false and it
    has not started (an executor that runs trainings elsewhere starts no more than asked). Raises
    what the trainer raises. Safe to call from several threads for different keys (a pipeline's cells)."""
    workspace = services.workspaces(state.namespace, state.name).of(due.key)
    with workspace.hold():
        workspace.begin(due, owner=owner)
        raw = workspace.finished()  # another holder of the lock may have finished it meanwhile
        if raw is None:
            request = _request(services, state, due, workspace.checkpoint_dir, on_progress, should_stop, start, owner)
            result = services.executor.train(request)
            if not isinstance(result, bytes):
                return result
            raw = result
            workspace.keep(raw)
    return raw


def _request(
    services: Services,
    state: State,
    due: Due,
    checkpoint_dir: Path,
    on_progress: Callable[[Any], None] | None,
    should_stop: Callable[[], bool] | None,
    start: bool = True,
    owner: str = MODEL_OWNER,
) -> TrainingRequest:
    spec = state.spec
    credentials = None
    lookup, secret = services.credentials, spec.training.credentials_secret
    if secret and lookup is not None:
        # read when a backend asks (ibm: only), and again after a 401: a rotated Secret is picked up
        credentials = lambda: lookup(state.namespace, secret)  # noqa: E731
    return TrainingRequest(
        namespace=state.namespace,
        name=state.name,
        spec=spec,
        due=due,
        checkpoint_dir=checkpoint_dir,
        repo_root=services.registry.repo,
        credentials=credentials,
        # a resumed training's checkpoint counts what it spent before it stopped: its stopped entries do not
        budget_used_seconds=state.ledger.qpu_seconds(state.now, budget_window(state.spec), resuming=due.key),
        on_progress=on_progress,
        should_stop=should_stop,
        start=start,
        owner=owner,
    )


def budget_window(spec: QuantumModelSpec) -> timedelta:
    """The rolling window ``governance.qpuBudgetSeconds`` counts over (``qpuBudgetWindow``, 30 days)."""
    return timedelta(days=spec.governance.budget_window_days)


def usage_of(artifact: Any) -> dict[str, float]:
    manifest = getattr(artifact, "manifest", {}) or {}
    usage = manifest.get("usage") or (manifest.get("lineage") or {}).get("usage") or {}
    return {
        "qpuSeconds": float(usage.get("qpuSeconds", usage.get("qpu_seconds", 0.0)) or 0.0),
        "primitiveJobs": float(usage.get("primitiveJobs", usage.get("jobs", 0)) or 0),
        "shots": float(usage.get("shots", 0) or 0),
    }


# --- approvals -------------------------------------------------------------------------------------------


def pending_approvals(services: Services, state: State) -> list[git_approvals.Approval]:
    """Approvals in history that count and are not in the ledger yet."""
    registry = services.registry
    recorded = state.ledger.approval_commits()
    found: list[git_approvals.Approval] = []
    for commit, ns, name, version in registry.approval_trailers():
        if (ns, name) != (state.namespace, state.name) or commit.sha in recorded:
            continue
        governance = state.spec.governance
        approved = state.version(version)
        approval = git_approvals.judge(
            registry.git,
            commit,
            version=version,
            version_path=registry.version_path(ns, name, version),
            approvers=list(governance.approvers),
            require_signed=governance.require_signed_approvals or registry.trust.checked,
            controller_email=registry.identity.email,
            signature=registry.signature(commit),
            version_digest=approved.digest if approved else None,
            spec_author=str(approved.source.get("author") or "")
            if approved and governance.separation_of_duties
            else None,
            now=state.now,
        )
        if approval.counts and not _approved_before(state.ledger, found, approval):
            found.append(approval)
    return found


def _approved_before(ledger: Ledger, found: list[git_approvals.Approval], approval: git_approvals.Approval) -> bool:
    """Each approver's approval of a version is recorded once (a signed one still counts after an
    unsigned one, for when governance starts to require signatures)."""
    for entry in ledger.for_version(approval.version, LedgerKind.APPROVED):
        same = str(entry.data.get("approver", "")).lower() == approval.approver
        if same and (entry.data.get("signed") or not approval.signed):
            return True
    return any(a.approver == approval.approver and a.version == approval.version for a in found)


def approval_records(services: Services, state: State) -> list[RecordDecision]:
    records = []
    for approval in pending_approvals(services, state):
        data: dict[str, Any] = {"approver": approval.approver, "commit": approval.commit, "signed": approval.signed}
        if approval.expires:
            data["expires"] = approval.expires
        signed = " (signed)" if approval.signed else ""
        message = f"version {approval.version} approved by {approval.approver}{signed}"
        records.append(RecordDecision(LedgerKind.APPROVED, approval.version, message, data))
    return records


# --- evaluate: the gates ------------------------------------------------------------------------------------


def champion_score(services: Services, state: State, candidate: Version) -> promotion.ChampionScore | None:
    """The champion's value of the comparison metric on ``candidate``'s test split."""
    champion = state.version(state.ledger.champion())
    if champion is None or champion.number == candidate.number:
        return None
    metric = promotion.CHAMPION_METRIC
    if champion.dataset_digest == candidate.dataset_digest:
        return promotion.ChampionScore(champion.number, champion.scalar_metrics().get(metric), "same test split")
    try:
        value = training().score(champion.artifact, state.spec, repo_root=services.registry.repo).get(metric)
    except Exception as err:
        why = f"champion not re-scored on the new test split: {describe_failure(err)}"
        return promotion.ChampionScore(champion.number, None, why)
    return promotion.ChampionScore(champion.number, value, "champion re-scored on this version's test split")


def gate_decision(services: Services, state: State, candidate: Version) -> RecordDecision:
    """``candidate`` judged by the spec's gates and ``beatChampionBy``: gate-passed or gate-failed."""
    score = champion_score(services, state, candidate)
    report = promotion.evaluate_gates(state.spec, candidate, score)
    data = {**report.to_json(), "versionDigest": candidate.digest}
    if score is not None:
        data["champion"] = {"version": score.version, "value": score.value, "how": score.how}
    return RecordDecision(report.kind, candidate.number, report.message(), data)


# --- promote -------------------------------------------------------------------------------------------------

_PLAN_ACTIONS = {
    promotion.PromotionAction.PROMOTE: PlanAction.PROMOTE,
    promotion.PromotionAction.ROLLBACK: PlanAction.ROLLBACK,
    promotion.PromotionAction.BLOCK: PlanAction.BLOCK,
    promotion.PromotionAction.WAIT: PlanAction.WAIT,
    promotion.PromotionAction.EVALUATE: PlanAction.WAIT,
    promotion.PromotionAction.NOTHING: PlanAction.NOTHING,
}


def promote(state: State, step: promotion.PromotionStep) -> tuple[list[Intent], Verdict]:
    """Carrying out a promotion step: the champion changes, a pin blocks, or promotion stands."""
    verdict = Verdict(_PLAN_ACTIONS[step.action], step.reason, step.version)
    Action = promotion.PromotionAction
    if step.action in (Action.PROMOTE, Action.ROLLBACK) and step.version is not None:
        version = state.version(step.version)
        assert version is not None and step.decision is not None
        data = {"versionDigest": version.digest, "previous": state.ledger.champion(), "pin": state.spec.promotion.pin}
        verb = "promoted" if step.action is Action.PROMOTE else "rolled back to"
        message = f"{verb} version {step.version}: {step.reason}"
        return [RecordDecision(step.decision, step.version, message, data), Promotion("champion", message)], verdict
    if step.action is Action.BLOCK:
        intents: list[Intent] = [Block((PIN_RULE,), step.reason)]
        if not state.ledger.last_blocked_with(step.reason):
            intents.append(RecordDecision(LedgerKind.BLOCKED, step.version, step.reason, {"rules": [PIN_RULE]}))
        return intents, verdict
    standing: PromotionState = "none"
    if step.action is Action.WAIT:
        standing = "waiting"
    elif state.ledger.champion() is not None:
        standing = "champion"
    elif state.latest is not None and step.standing is promotion.Standing.GATES_FAILED:
        standing = "gates-failed"
    return [Promotion(standing, step.reason)], verdict


def watched(ctx: StepContext, intent: Watch) -> list[Intent]:
    """Run the due checks (``services.watch``): their report, and one ``drift-detected`` record per
    drift not acted on before (same check, same key, same champion)."""
    state, champion = ctx.state, intent.champion
    monitoring = state.spec.monitoring
    assert monitoring is not None
    report = ctx.services.watch(ctx.observed.model, champion, intent.due)
    intents: list[Intent] = [Watched(report)]
    acted = {
        (e.data.get("check"), e.data.get("key"), e.version) for e in state.ledger.of_kind(LedgerKind.DRIFT_DETECTED)
    }
    wanted = [a.value for a in monitoring.on_drift]
    for check in report.drifted:
        if (check.kind.value, check.key, champion.number) in acted:
            continue
        data = {
            "check": check.kind.value,
            "key": check.key,
            "figures": check.figures,
            "actions": wanted,
            "checkedAt": report.checked_at,
        }
        message = f"drift detected on version {champion.number}: {drift_summary(check)}"
        intents.append(RecordDecision(LedgerKind.DRIFT_DETECTED, champion.number, message, data))
    return intents


def drift_summary(check: Any) -> str:
    """One line for a drift's ledger message: the check and its figures before and after."""
    f = check.figures
    if check.kind.value == "live":
        return (
            f"live accuracy {f['accuracy']['after']:.3f} on {f['labelled']} labelled rows, "
            f"{f['accuracy']['before']:.3f} at test"
        )
    if "esp" in f:
        return f"ESP {f['esp']['before']:.4f} -> {f['esp']['after']:.4f} on today's calibration ({f['calibration']['after']['lastUpdate']})"
    if "accuracy" in f:
        return f"replayed accuracy {f['accuracy']['before']:.3f} -> {f['accuracy']['after']:.3f} under today's noise"
    if f.get("moved"):
        return f"the data moved on {', '.join(str(m) for m in f['moved'])}"
    return check.kind.value
