"""Reconciling one QuantumModel against its registry in Git: the engine both shells drive.

What a reconcile does, in order, each step only when the one before allows it:

1. governance: failed rules under ``enforce`` block training and promotion (recorded once);
2. training, when due: no version yet, the spec or the dataset changed since the latest version, or
   the cron schedule came due. Training resumes from its checkpoint; the finished artifact is kept
   beside the checkpoint (never committed) until its version is in Git, so a crash after training
   never trains again, and registration is idempotent by the artifact's digest;
3. approvals found in Git history are recorded in the ledger, each once;
4. the newest version's gates are evaluated (once) against the champion on the same test split;
5. promotion: auto, manual, or a pin (forward or back).

Each decision is one commit by the controller; the commits are pushed at the end (rebased and retried
on rejection). If another controller decided about the same model first, this one's commits are
dropped and it decides again on the history that won. An unchanged repository makes no commit.
"""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from controller.api import limits
from controller.api.quantummodel import (
    QuantumModel,
    QuantumModelSpec,
    QuantumModelStatus,
    SourceRef,
    TrainingStatus,
    Usage,
    VersionRef,
)
from controller.engine import governance, promotion
from controller.engine import status as model_status
from controller.engine.memo import Memo
from controller.engine.registry import approvals as git_approvals
from controller.engine.registry import versions as version_files
from controller.engine.registry.canonical import digest_of
from controller.engine.registry.ledger import (
    APPROVED,
    BLOCKED,
    FAILED,
    REGISTERED,
    Ledger,
    format_time,
    parse_time,
)
from controller.engine.registry.store import TRAILER_MODEL, Registry
from controller.engine.registry.versions import Provenance, Version
from controller.engine.registry.yamlio import write_atomic

TrainerFn = Callable[..., Any]
CredentialsLookup = Callable[[str, str], Any]
Action = Literal["train", "register", "promote", "rollback", "block", "wait", "suspend", "nothing"]
ATTEMPTS = 3  # decisions redone at most this often when another controller wins the race
MEMO_LIMIT = 10_000  # specs (and datasets) whose governance report (and digest) a reconciler keeps


@dataclass(frozen=True)
class Observed:
    """What a shell observed about one QuantumModel."""

    model: QuantumModel
    source: SourceRef = field(default_factory=SourceRef)
    requested_at: str | None = None


@dataclass(frozen=True)
class Plan:
    """A pure decision, no side effects: what ``qmlops plan`` prints. ``changes``: whether ``run``
    would train or commit anything."""

    action: Action
    reason: str
    version: int | None = None
    changes: bool = False


@dataclass(frozen=True)
class Decision:
    """One ledger entry written (the operator turns each into a Kubernetes Event)."""

    kind: str
    version: int | None
    message: str
    commit: str | None


@dataclass
class Outcome:
    status: QuantumModelStatus
    decisions: list[Decision]
    requeue_after: float | None


@dataclass(frozen=True)
class Due:
    """Why a training is due, and the key its checkpoint and artifact are kept under."""

    reason: str
    key: str
    spec_digest: str
    dataset_digest: str


class TrainingDue(Exception):
    """A reconcile told not to train reached a training that is due. Nothing was written: whoever
    may train (the operator's training daemon) reconciles the model again."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"training because {reason}")
        self.reason = reason


def training() -> Any:
    """The training engine, imported on first use: planning, auditing and ``--help`` do not load Qiskit."""
    return importlib.import_module("controller.engine.training")


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- what the registry says about a model ----------------------------------------------------------


@dataclass
class State:
    namespace: str
    name: str
    spec: QuantumModelSpec
    ledger: Ledger
    versions: list[Version]
    now: datetime

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def latest(self) -> Version | None:
        return self.versions[-1] if self.versions else None

    def version(self, number: int | None) -> Version | None:
        return next((v for v in self.versions if v.number == number), None)

    @property
    def numbers(self) -> list[int]:
        return [v.number for v in self.versions]


def blocking_reason(spec: QuantumModelSpec) -> tuple[list[str], str, Any]:
    report = governance.evaluate(spec)
    blockers = governance.blocking(report, spec)
    if not blockers:
        return [], "", report
    text = "; ".join(f"blocked by rule {r.rule}: {r.message}" for r in blockers)
    return [r.rule for r in blockers], text, report


def last_cron_tick(schedule: str, after: datetime, now: datetime) -> datetime | None:
    """The latest tick of ``schedule`` in (after, now], if any."""
    from croniter import croniter

    tick = croniter(schedule, now).get_prev(datetime)
    return tick if tick > after else None


def next_cron_tick(schedule: str, now: datetime) -> datetime:
    from croniter import croniter

    return croniter(schedule, now).get_next(datetime)


def revision_sha(source: SourceRef) -> str:
    revision = source.revision or ""
    return revision.rsplit(":", 1)[-1][:12] if "@sha1:" in revision else "the observed revision"


def training_due(state: State, source: SourceRef, spec_digest: str, dataset_digest: str) -> Due | None:
    base = f"{spec_digest}|{dataset_digest}" + limits.timeout_key(state.spec.training)  # retried on a new timeout
    latest = state.latest

    def due(reason: str, slot: str = "") -> Due:
        return Due(reason, digest_of([base, slot])[7:23], spec_digest, dataset_digest)

    if latest is None:
        return due("no version yet")
    if latest.spec_digest != spec_digest:
        return due(f"the spec changed at {revision_sha(source)} since version {latest.number}")
    if latest.dataset_digest != dataset_digest:
        return due(f"the dataset changed since version {latest.number}")
    schedule = state.spec.training.schedule
    if schedule:
        tick = last_cron_tick(schedule, parse_time(latest.registered_at), state.now)
        if tick is not None:
            return due(f"the schedule {schedule!r} came due at {format_time(tick)}", format_time(tick))
    return None


# --- the artifact cache beside the checkpoint ---------------------------------------------------------


class Workspace:
    """``<checkpoint_root>/<namespace>/<name>/``: the training's checkpoint and finished artifact,
    kept out of Git until the version is registered."""

    def __init__(self, root: Path, namespace: str, name: str) -> None:
        self.folder = root / namespace / name

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoint"

    @property
    def artifact_file(self) -> Path:
        return self.folder / "artifact.json"

    @property
    def key_file(self) -> Path:
        return self.folder / "training.json"

    def key(self) -> str | None:
        try:
            return str(json.loads(self.key_file.read_text())["key"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def begin(self, due: Due) -> None:
        """Start (or resume) the training for ``due``; a checkpoint of another training is dropped."""
        if self.key() != due.key:
            self.clear()
            about = {
                "key": due.key,
                "reason": due.reason,
                "specDigest": due.spec_digest,
                "datasetDigest": due.dataset_digest,
            }
            write_atomic(self.key_file, json.dumps(about).encode())
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    def waiting(self, spec_digest: str, dataset_digest: str) -> Due | None:
        """A finished training of this very spec and data whose artifact is still here: when another
        controller registered a version first, this one's work is registered too, not thrown away."""
        try:
            about = json.loads(self.key_file.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(about, dict) or not self.artifact_file.exists():
            return None
        if (about.get("specDigest"), about.get("datasetDigest")) != (spec_digest, dataset_digest):
            return None
        return Due(str(about.get("reason", "")), str(about.get("key")), spec_digest, dataset_digest)

    def finished(self, due: Due) -> bytes | None:
        if self.key() == due.key and self.artifact_file.exists():
            return self.artifact_file.read_bytes()
        return None

    def keep(self, artifact: bytes) -> None:
        write_atomic(self.artifact_file, artifact)

    def clear(self) -> None:
        if self.folder.exists():
            shutil.rmtree(self.folder)


# --- the reconciler ----------------------------------------------------------------------------------


class Reconciler:
    def __init__(
        self,
        registry: Registry,
        *,
        trainer: TrainerFn | None = None,
        clock: Callable[[], datetime] = utcnow,
        checkpoint_root: Path | None = None,
        credentials: CredentialsLookup | None = None,
    ) -> None:
        self.registry = registry
        self.trainer = trainer or training().train
        self.clock = clock
        self.checkpoint_root = checkpoint_root or registry.private_dir() / "checkpoints"
        self.credentials = credentials
        self._builtin_digests: Memo[str] = Memo(MEMO_LIMIT)
        self._policies: Memo[tuple[list[str], str, Any]] = Memo(MEMO_LIMIT)

    # --- reading ------------------------------------------------------------------------------

    def _state(self, model: QuantumModel) -> State:
        ns, name = model.metadata.namespace, model.metadata.name
        return State(
            ns, name, model.spec, self.registry.ledger(ns, name), self.registry.versions(ns, name), self._now()
        )

    def _now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    def _digests(self, spec: QuantumModelSpec) -> tuple[str, str]:
        return training().spec_digest(spec), self._dataset_digest(spec)

    def _dataset_digest(self, spec: QuantumModelSpec) -> str:
        """Loading and splitting the data is most of a reconcile with nothing to do: a builtin
        dataset's digest is remembered by its settings; a file's is read again (the file moves with
        the repository)."""
        if not spec.dataset.source.startswith("builtin:"):
            return training().dataset_digest(spec, repo_root=self.registry.repo)
        key = (spec.dataset.model_dump_json(), spec.circuit.qubits)
        return self._builtin_digests.get(key, lambda: training().dataset_digest(spec, repo_root=self.registry.repo))

    def _blocking_reason(self, spec: QuantumModelSpec) -> tuple[list[str], str, Any]:
        """Governance is a function of the spec alone: judged once per spec a reconciler sees (the
        report is read, never changed, by the status built from it)."""
        return self._policies.get(spec.model_dump_json(), lambda: blocking_reason(spec))

    # --- plan ---------------------------------------------------------------------------------

    def plan(self, observed: Observed) -> Plan:
        """What :meth:`reconcile` would do now, and why; nothing is trained or written."""
        model = observed.model
        state = self._state(model)
        if model.spec.suspend:
            return Plan("suspend", "spec.suspend is true: nothing is trained or promoted")
        blockers, reason, _ = blocking_reason(model.spec)
        if blockers:
            return Plan("block", reason, changes=not state.ledger.last_blocked_with(reason))
        try:
            spec_digest, dataset_digest = self._digests(model.spec)
        except Exception as err:
            return Plan(
                "train", f"the training data cannot be prepared: {model_status.describe_failure(err)}", changes=True
            )
        due = training_due(state, observed.source, spec_digest, dataset_digest)
        workspace = Workspace(self.checkpoint_root, state.namespace, state.name)
        waiting = workspace.waiting(spec_digest, dataset_digest) if due is None else None
        if waiting is not None and not self._registered(state, workspace):
            return Plan("register", f"a finished training ({waiting.reason}) is waiting to be registered", changes=True)
        if due is not None:
            failed = self._failed_for(state.ledger, due)
            if failed is not None:
                return Plan("nothing", f"training for {due.reason} failed: {failed}; change the spec to retry")
            if workspace.finished(due) is not None:
                return Plan("register", f"a finished training ({due.reason}) is waiting to be registered", changes=True)
            resumed = " (resuming from its checkpoint)" if workspace.key() == due.key else ""
            return Plan("train", f"train because {due.reason}{resumed}", changes=True)
        pending = self._pending_approvals(state)
        step = self._promotion_step(state, pending)
        latest = state.latest
        gates_pending = latest is not None and state.ledger.gate_entry(latest.number) is None
        changes = bool(pending) or gates_pending or step.action in ("promote", "rollback")
        if step.action == "block":
            changes = not state.ledger.last_blocked_with(step.reason)
        action: Action = "wait" if step.action == "evaluate" else step.action
        reason = step.reason
        if pending:
            reason += f" ({len(pending)} new approval{'s' if len(pending) != 1 else ''} to record)"
        return Plan(action, reason, step.version, changes)

    def _registered(self, state: State, workspace: Workspace) -> bool:
        try:
            digest = training().ModelArtifact.from_json(workspace.artifact_file.read_bytes()).digest
        except Exception:
            return True  # nothing usable to register
        return digest in state.ledger.registered_digests()

    def _promotion_step(self, state: State, pending: list[git_approvals.Approval]) -> promotion.PromotionStep:
        """The promotion step as it will be once gates and pending approvals are recorded."""
        ledger = state.ledger
        latest = state.latest
        if latest is not None and ledger.gate_entry(latest.number) is None:
            report = promotion.evaluate_gates(state.spec, latest, self._champion_score(state, latest))
            ledger = _with(ledger, state, report.kind, latest.number, report.message(), {})
        for approval in pending:
            data = {"approver": approval.approver, "commit": approval.commit, "signed": approval.signed}
            ledger = _with(ledger, state, APPROVED, approval.version, "", data)
        return promotion.decide(state.spec, ledger, state.numbers, namespace=state.namespace, name=state.name)

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
        key = f"{observed.model.metadata.namespace}/{observed.model.metadata.name}"
        self.registry.sync()
        for _ in range(ATTEMPTS):
            decisions: list[Decision] = []
            outcome = self._once(observed, decisions, on_progress, should_stop, may_train)
            published = self.registry.publish()
            if not any(key in c.trailer(TRAILER_MODEL) for c in published.dropped):
                break
        self._clean_workspace(observed.model)
        commits = self.registry.entry_commits(observed.model.metadata.namespace, observed.model.metadata.name)
        outcome.decisions = [
            Decision(d.kind, d.version, d.message, commits[d.commit].sha if d.commit in commits else None)
            for d in decisions
        ]
        return outcome

    def _once(
        self,
        observed: Observed,
        decisions: list[Decision],
        on_progress: Callable[[Any], None] | None,
        should_stop: Callable[[], bool] | None,
        may_train: bool,
    ) -> Outcome:
        model = observed.model
        ns, name = model.metadata.namespace, model.metadata.name
        self.registry.discard_uncommitted(ns, name)
        state = self._state(model)
        facts = model_status.Facts(
            generation=model.metadata.generation, source=observed.source, requested_at=observed.requested_at
        )
        blockers, reason, facts.policy = self._blocking_reason(model.spec)

        def record(
            kind: str,
            version: int | None,
            message: str,
            data: dict[str, Any] | None = None,
            files: dict[str, bytes] | None = None,
        ) -> None:
            recorded = self.registry.record(
                ns,
                name,
                at=format_time(self._now()),
                kind=kind,
                version=version,
                message=message,
                data=data,
                files=files,
            )
            # the commit is found again by the entry's digest after the push (a rebase changes shas)
            decisions.append(Decision(kind, version, message, recorded.entry.digest))
            state.ledger = self.registry.ledger(ns, name)
            state.versions = self.registry.versions(ns, name)

        if model.spec.suspend:
            facts.suspended = True
        elif blockers:
            facts.blockers, facts.block_message = blockers, reason
            if not state.ledger.last_blocked_with(reason):
                record(BLOCKED, None, reason, {"rules": blockers})
        else:
            self._train_step(observed, state, facts, record, on_progress, should_stop, may_train)
            if facts.training_state not in ("failed",):
                self._approval_step(state, record)
                self._gate_step(state, record)
                self._promotion_step_do(state, facts, record)
        return self._outcome(model, state, facts)

    # --- the steps ------------------------------------------------------------------------------

    def _train_step(
        self,
        observed: Observed,
        state: State,
        facts: model_status.Facts,
        record: Callable[..., None],
        on_progress: Callable[[Any], None] | None,
        should_stop: Callable[[], bool] | None,
        may_train: bool,
    ) -> None:
        spec = state.spec
        try:
            spec_digest, dataset_digest = self._digests(spec)
        except Exception as err:
            message = f"the training data cannot be prepared: {model_status.describe_failure(err)}"
            self._record_failure(state, facts, record, message, "", "")
            return
        workspace = Workspace(self.checkpoint_root, state.namespace, state.name)
        due = training_due(state, observed.source, spec_digest, dataset_digest)
        if due is None:
            waiting = workspace.waiting(spec_digest, dataset_digest)
            raw = workspace.finished(waiting) if waiting else None
            if waiting is not None and raw is not None:
                self._register(state, observed.source, waiting, raw, record)
            return
        failed = self._failed_for(state.ledger, due)
        if failed is not None:
            facts.training_state, facts.training_message = (
                "failed",
                f"training failed: {failed}; change the spec to retry",
            )
            return
        if not may_train and workspace.finished(due) is None:
            raise TrainingDue(due.reason)
        workspace.begin(due)
        raw = workspace.finished(due)
        if raw is None:
            facts.training_state, facts.training_message = "running", f"training because {due.reason}"
            try:
                artifact = self._train(state, workspace, on_progress, should_stop)
            except Exception as err:
                if isinstance(err, training().TrainingStopped):
                    raise
                self._record_failure(
                    state, facts, record, model_status.describe_failure(err), spec_digest, dataset_digest, due
                )
                return
            raw = artifact.to_json()
            workspace.keep(raw)
        self._register(state, observed.source, due, raw, record)
        facts.training_state, facts.training_message = "done", f"trained because {due.reason}"

    def _train(
        self,
        state: State,
        workspace: Workspace,
        on_progress: Callable[[Any], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> Any:
        spec = state.spec
        credentials = None
        lookup, secret = self.credentials, spec.training.credentials_secret
        if secret and lookup is not None:
            # read when a backend asks (ibm: only), and again after a 401: a rotated Secret is picked up
            credentials = lambda: lookup(state.namespace, secret)  # noqa: E731
        return self.trainer(
            spec,
            repo_root=self.registry.repo,
            checkpoint_dir=workspace.checkpoint_dir,
            credentials=credentials,
            budget_used_seconds=state.ledger.qpu_seconds(state.now),
            on_progress=on_progress,
            should_stop=should_stop,
        )

    def _failed_for(self, ledger: Ledger, due: Due) -> str | None:
        """The failure already recorded for this very training (same key), if any."""
        for entry in reversed(ledger.entries):
            if entry.kind == REGISTERED:
                return None
            if entry.kind == FAILED and entry.data.get("trainingKey") == due.key:
                return entry.message
        return None

    def _record_failure(
        self,
        state: State,
        facts: model_status.Facts,
        record: Callable[..., None],
        message: str,
        spec_digest: str,
        dataset_digest: str,
        due: Due | None = None,
    ) -> None:
        facts.training_state, facts.training_message = "failed", message
        last = state.ledger.last
        if last is not None and last.kind == FAILED and last.message == message:
            return
        data = {"specDigest": spec_digest, "datasetDigest": dataset_digest, "trainingKey": due.key if due else None}
        record(FAILED, None, message, data)

    def _register(self, state: State, source: SourceRef, due: Due, raw: bytes, record: Callable[..., None]) -> None:
        artifact = training().ModelArtifact.from_json(raw)
        digest = str(artifact.digest)
        existing = state.ledger.registered_digests().get(digest)
        if existing is not None:
            return  # registered before the crash that brought us here: never twice
        number = version_files.next_number(state.numbers, state.ledger.versions())
        manifest = version_files.manifest(
            namespace=state.namespace,
            name=state.name,
            number=number,
            registered_at=format_time(self._now()),
            source=Provenance(source.repository, source.revision, source.path, source.author),
            spec_digest=due.spec_digest,
            dataset_digest=due.dataset_digest,
            artifact=json.loads(raw),
            artifact_digest=digest,
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
            "usage": _usage_of(artifact),
        }
        files = {version_files.file_name(number): version_files.encode(manifest)}
        record(REGISTERED, number, f"registered version {number}{accuracy}, trained because {due.reason}", data, files)

    def _approval_step(self, state: State, record: Callable[..., None]) -> None:
        for approval in self._pending_approvals(state):
            data = {"approver": approval.approver, "commit": approval.commit, "signed": approval.signed}
            signed = " (signed)" if approval.signed else ""
            record(
                APPROVED, approval.version, f"version {approval.version} approved by {approval.approver}{signed}", data
            )

    def _pending_approvals(self, state: State) -> list[git_approvals.Approval]:
        """Approvals in history that count and are not in the ledger yet."""
        recorded = state.ledger.approval_commits()
        found: list[git_approvals.Approval] = []
        for commit, ns, name, version in self.registry.approval_trailers():
            if (ns, name) != (state.namespace, state.name) or commit.sha in recorded:
                continue
            approval = git_approvals.judge(
                self.registry.git,
                commit,
                version=version,
                version_path=self.registry.version_path(ns, name, version),
                approvers=list(state.spec.governance.approvers),
                require_signed=state.spec.governance.require_signed_approvals,
                controller_email=self.registry.identity.email,
            )
            if approval.counts and not self._approved_before(state.ledger, found, approval):
                found.append(approval)
        return found

    @staticmethod
    def _approved_before(ledger: Ledger, found: list[git_approvals.Approval], approval: git_approvals.Approval) -> bool:
        """Each approver's approval of a version is recorded once (a signed one still counts after an
        unsigned one, for when governance starts to require signatures)."""
        for entry in ledger.for_version(approval.version, APPROVED):
            same = str(entry.data.get("approver", "")).lower() == approval.approver
            if same and (entry.data.get("signed") or not approval.signed):
                return True
        return any(a.approver == approval.approver and a.version == approval.version for a in found)

    def _champion_score(self, state: State, candidate: Version) -> promotion.ChampionScore | None:
        champion = state.version(state.ledger.champion())
        if champion is None or champion.number == candidate.number:
            return None
        metric = promotion.CHAMPION_METRIC
        if champion.dataset_digest == candidate.dataset_digest:
            return promotion.ChampionScore(champion.number, champion.scalar_metrics().get(metric), "same test split")
        try:
            value = training().score(champion.artifact, state.spec, repo_root=self.registry.repo).get(metric)
        except Exception as err:
            why = f"champion not re-scored on the new test split: {model_status.describe_failure(err)}"
            return promotion.ChampionScore(champion.number, None, why)
        return promotion.ChampionScore(champion.number, value, "champion re-scored on this version's test split")

    def _gate_step(self, state: State, record: Callable[..., None]) -> None:
        latest = state.latest
        if latest is None or state.ledger.gate_entry(latest.number) is not None:
            return
        score = self._champion_score(state, latest)
        report = promotion.evaluate_gates(state.spec, latest, score)
        data = {**report.to_json(), "versionDigest": latest.digest}
        if score is not None:
            data["champion"] = {"version": score.version, "value": score.value, "how": score.how}
        record(report.kind, latest.number, report.message(), data)

    def _promotion_step_do(self, state: State, facts: model_status.Facts, record: Callable[..., None]) -> None:
        step = promotion.decide(state.spec, state.ledger, state.numbers, namespace=state.namespace, name=state.name)
        if step.action in ("promote", "rollback") and step.version is not None:
            version = state.version(step.version)
            assert version is not None
            previous = state.ledger.champion()
            data = {"versionDigest": version.digest, "previous": previous, "pin": state.spec.promotion.pin}
            verb = "promoted" if step.action == "promote" else "rolled back to"
            message = f"{verb} version {step.version}: {step.reason}"
            record(step.decision, step.version, message, data)
            facts.promotion_state, facts.promotion_message = "champion", message
            return
        if step.action == "block":
            facts.blockers, facts.block_message = ["promotion.pin"], step.reason
            facts.promotion_state, facts.promotion_message = "blocked", step.reason
            if not state.ledger.last_blocked_with(step.reason):
                record(BLOCKED, step.version, step.reason, {"rules": ["promotion.pin"]})
            return
        facts.promotion_message = step.reason
        champion = state.ledger.champion()
        if step.action == "wait":
            facts.promotion_state = "waiting"
        elif champion is not None:
            facts.promotion_state = "champion"
        elif state.latest is not None and step.action == "nothing" and "fails its gates" in step.reason:
            facts.promotion_state = "gates-failed"

    # --- the outcome ------------------------------------------------------------------------------

    def _outcome(self, model: QuantumModel, state: State, facts: model_status.Facts) -> Outcome:
        ns, name = state.namespace, state.name
        commits = self.registry.entry_commits(ns, name)
        registered = {e.version: e for e in state.ledger.of_kind(REGISTERED)}

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
        usage = state.ledger.usage(state.now)
        facts.usage = Usage(
            qpu_seconds=usage["qpuSeconds"], primitive_jobs=int(usage["primitiveJobs"]), shots=int(usage["shots"])
        )
        status = model_status.build(model.status, facts, state.now)
        requeue = None
        if state.spec.training.schedule and not state.spec.suspend:
            requeue = max(1.0, (next_cron_tick(state.spec.training.schedule, state.now) - state.now).total_seconds())
        return Outcome(status, [], requeue)

    def _clean_workspace(self, model: QuantumModel) -> None:
        """Drop the kept artifact and checkpoint once their version is in Git and pushed."""
        workspace = Workspace(self.checkpoint_root, model.metadata.namespace, model.metadata.name)
        if not workspace.artifact_file.exists() or self.registry.git.unpushed():
            return
        try:
            digest = training().ModelArtifact.from_json(workspace.artifact_file.read_bytes()).digest
        except Exception:
            return
        ledger = self.registry.ledger(model.metadata.namespace, model.metadata.name)
        if digest in ledger.registered_digests():
            workspace.clear()


def _with(ledger: Ledger, state: State, kind: str, version: int | None, message: str, data: dict[str, Any]) -> Ledger:
    """``ledger`` with a hypothetical entry appended (for planning; never written)."""
    from controller.engine.registry.ledger import draft

    entry = draft(
        ledger.last, at=format_time(state.now), kind=kind, model=state.key, version=version, message=message, data=data
    )
    return Ledger((*ledger.entries, entry))


def _usage_of(artifact: Any) -> dict[str, float]:
    manifest = getattr(artifact, "manifest", {}) or {}
    usage = manifest.get("usage") or (manifest.get("lineage") or {}).get("usage") or {}
    return {
        "qpuSeconds": float(usage.get("qpuSeconds", usage.get("qpu_seconds", 0.0)) or 0.0),
        "primitiveJobs": float(usage.get("primitiveJobs", usage.get("jobs", 0)) or 0),
        "shots": float(usage.get("shots", 0) or 0),
    }
