"""What every reconciler offers its steps: the registry, the trainer, the clock, the workspaces, and
the judgements worth remembering between reconciles (governance per spec, builtin dataset digests).

``ModelReconciler`` is one; a ``PipelineReconciler`` is the next, over the same services.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.api.quantummodel import QuantumModel, QuantumModelSpec
from controller.api.quantumpolicy import QuantumPolicy
from controller.engine import policy
from controller.engine.live import LiveSource
from controller.engine.memo import Memo
from controller.engine.reconcile.executor import Executor, InProcess
from controller.engine.reconcile.state import Governance, State, judge, training, utcnow
from controller.engine.reconcile.workspace import Workspaces
from controller.engine.registry.store import Registry
from controller.engine.registry.versions import Version

TrainerFn = Callable[..., Any]
CredentialsLookup = Callable[[str, str], Any]
MEMO_LIMIT = 10_000  # specs (and datasets) whose governance report (and digest) a reconciler keeps


@dataclass(frozen=True)
class WatchDue:
    """The monitoring checks that are due (their kinds), why, and what they would be checked on."""

    checks: tuple[str, ...]
    reason: str
    seen: tuple[str, ...]


class Services:
    def __init__(
        self,
        registry: Registry,
        *,
        trainer: TrainerFn | None = None,
        clock: Callable[[], datetime] = utcnow,
        checkpoint_root: Path | None = None,
        credentials: CredentialsLookup | None = None,
        policies: Callable[[], list[QuantumPolicy]] | None = None,
        executor: Executor | None = None,
        live: LiveSource | None = None,
    ) -> None:
        self.registry = registry
        self.trainer = trainer or training().train
        # where trainings run: here, with the trainer (the default), or elsewhere (the operator's Jobs)
        self.executor: Executor = executor or InProcess(self.trainer)
        self.clock = clock
        self.checkpoint_root = checkpoint_root or registry.private_dir() / "checkpoints"
        self.credentials = credentials
        self.policies = policies or (lambda: [])  # the QuantumPolicies in force (read at every reconcile)
        self._builtin_digests: Memo[str] = Memo(MEMO_LIMIT)
        self._policies: Memo[Governance] = Memo(MEMO_LIMIT)
        # (the model's wire spec, a cell's values) -> the cell's spec and its digest (pipelines ask at
        # every reconcile of a sweep, for every cell)
        self._variants: Memo[tuple[QuantumModelSpec, str]] = Memo(MEMO_LIMIT)
        # model -> (last check, what it was checked on: the champion's digest, calibration and dataset digests)
        self._watched: dict[str, tuple[datetime, tuple[str, ...]]] = {}
        self._calibrations: Any = None
        # where monitoring's live check reads the served champion's live accuracy; a shell installs it
        # (``qmlops run --serving-url``, the operator's serving Services); None: the check says so
        self.live: LiveSource | None = live

    def now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    def state(self, model: QuantumModel) -> State:
        ns, name = model.metadata.namespace, model.metadata.name
        ledger, versions = self.registry.acted_on(ns, name)  # only what the registry vouches for
        floors = policy.effective(model.spec, ns, model.metadata.labels, self.policies())
        return State(ns, name, floors.spec, ledger, versions, self.now(), floors)

    def workspaces(self, namespace: str, name: str) -> Workspaces:
        return Workspaces(self.checkpoint_root, namespace, name)

    def digests(self, spec: QuantumModelSpec) -> tuple[str, str]:
        """The spec's and the dataset's digests: what a version records and a training is keyed by."""
        return training().spec_digest(spec), self._dataset_digest(spec)

    def variant(
        self, model_wire: dict[str, Any], key: str, apply: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> tuple[QuantumModelSpec, str]:
        """A variant of the model's spec (``apply`` sets a pipeline cell's values on ``model_wire``, the
        spec as JSON) and its spec digest, remembered by ``key`` (the wire spec and the cell's values, as
        text); raises the spec's ``ValidationError`` when the variant is not valid (nothing remembered).
        The spec returned is shared: callers never change it."""

        def make() -> tuple[QuantumModelSpec, str]:
            spec = QuantumModelSpec.model_validate(apply(model_wire))
            return spec, training().spec_digest(spec)

        return self._variants.get(key, make)

    def dataset_digest(self, spec: QuantumModelSpec) -> str:
        """The dataset's digest (see :meth:`digests`)."""
        return self._dataset_digest(spec)

    def _dataset_digest(self, spec: QuantumModelSpec) -> str:
        """Loading and splitting the data is most of a reconcile with nothing to do: a builtin
        dataset's digest is remembered by its settings; a file's is read again (the file moves with
        the repository)."""
        if not spec.dataset.source.startswith("builtin:"):
            return training().dataset_digest(spec, repo_root=self.registry.repo)
        key = (spec.dataset.model_dump_json(), spec.circuit.qubits)
        return self._builtin_digests.get(key, lambda: training().dataset_digest(spec, repo_root=self.registry.repo))

    def calibrations(self) -> Any:
        """Today's calibrations (monitoring.CalibrationSource): one per reconciler, so an ibm: device's
        properties are fetched at most once per monitoring period."""
        if self._calibrations is None:
            from controller.engine.monitoring import CalibrationSource

            self._calibrations = CalibrationSource(self.registry.repo)
        return self._calibrations

    def watch_due(self, model: QuantumModel, champion: Version) -> WatchDue | None:
        """Whether the champion's monitoring checks are due, which and why (cheap: nothing is run):
        ``monitoring.every`` after the last check, or at once when what they would be checked on changed
        (a new calibration of its device, another dataset, another champion). None when not due."""
        from controller.engine.monitoring.checks import enabled

        spec = model.spec
        assert spec.monitoring is not None
        key = f"{model.metadata.namespace}/{model.metadata.name}"
        now = self.now()
        seen = (champion.digest, *self._seen(spec, champion, now))
        checks = tuple(kind.value for kind in enabled(spec.monitoring))
        last = self._watched.get(key)
        if last is None:
            return WatchDue(checks, f"version {champion.number} has not been checked by this controller yet", seen)
        at, before = last
        if before[0] != seen[0]:
            return WatchDue(checks, f"version {champion.number} is a new champion", seen)
        if before != seen:
            return WatchDue(checks, "what the checks look at changed (a new calibration or dataset)", seen)
        if (now - at).total_seconds() >= spec.monitoring.seconds:
            return WatchDue(checks, f"monitoring.every ({spec.monitoring.every}) has passed since the last check", seen)
        return None

    def watch(self, model: QuantumModel, champion: Version, due: WatchDue) -> Any:
        """Run the champion's monitoring checks now: their ``monitoring.Report`` (remembered as the last
        check of what ``due`` saw)."""
        from controller.engine.monitoring import monitor_model

        now = self.now()
        report = monitor_model(
            self.registry, model, source=self.calibrations(), now=now, credentials=self.credentials, live=self.live
        )
        self._watched[f"{model.metadata.namespace}/{model.metadata.name}"] = (now, due.seen)
        return report

    def _seen(self, spec: QuantumModelSpec, champion: Version, now: datetime) -> tuple[str, ...]:
        """What a check would look at today: the calibration's digest and the dataset's (cheap: a fake
        device's file is read again, an ibm: device's properties are fetched once per period)."""
        from datetime import timedelta

        assert spec.monitoring is not None
        parts = []
        backend = str((champion.artifact.get("lineage") or {}).get("backend") or spec.training.backend)
        if backend.startswith(("fake:", "ibm:")) and backend != "ibm:least-busy":
            try:
                period = timedelta(seconds=spec.monitoring.seconds)
                parts.append(self.calibrations().today(backend, now=now, period=period).digest)
            except Exception:  # the check itself reports why (not run)
                parts.append("")
        if spec.dataset.source.startswith("file:"):
            try:
                parts.append(self._dataset_digest(spec))
            except Exception:
                parts.append("")
        return tuple(parts)

    def governance(self, spec: QuantumModelSpec) -> Governance:
        """Governance is a function of the spec alone: judged once per spec a reconciler sees (the
        report is read, never changed, by the status built from it)."""
        return self._policies.get(spec.model_dump_json(), lambda: judge(spec))
