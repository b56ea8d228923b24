"""What every reconciler offers its steps: the registry, the trainer, the clock, the workspaces, and
the judgements worth remembering between reconciles (governance per spec, builtin dataset digests).

``ModelReconciler`` is one; a ``PipelineReconciler`` is the next, over the same services.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.api.quantummodel import QuantumModel, QuantumModelSpec
from controller.engine.memo import Memo
from controller.engine.reconcile.executor import Executor, InProcess
from controller.engine.reconcile.state import Governance, State, judge, training, utcnow
from controller.engine.reconcile.workspace import Workspaces
from controller.engine.registry.store import Registry

TrainerFn = Callable[..., Any]
CredentialsLookup = Callable[[str, str], Any]
MEMO_LIMIT = 10_000  # specs (and datasets) whose governance report (and digest) a reconciler keeps


class Services:
    def __init__(
        self,
        registry: Registry,
        *,
        trainer: TrainerFn | None = None,
        clock: Callable[[], datetime] = utcnow,
        checkpoint_root: Path | None = None,
        credentials: CredentialsLookup | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.registry = registry
        self.trainer = trainer or training().train
        # where trainings run: here, with the trainer (the default), or elsewhere (the operator's Jobs)
        self.executor: Executor = executor or InProcess(self.trainer)
        self.clock = clock
        self.checkpoint_root = checkpoint_root or registry.private_dir() / "checkpoints"
        self.credentials = credentials
        self._builtin_digests: Memo[str] = Memo(MEMO_LIMIT)
        self._policies: Memo[Governance] = Memo(MEMO_LIMIT)

    def now(self) -> datetime:
        now = self.clock()
        return now if now.tzinfo else now.replace(tzinfo=UTC)

    def state(self, model: QuantumModel) -> State:
        ns, name = model.metadata.namespace, model.metadata.name
        return State(ns, name, model.spec, self.registry.ledger(ns, name), self.registry.versions(ns, name), self.now())

    def workspaces(self, namespace: str, name: str) -> Workspaces:
        return Workspaces(self.checkpoint_root, namespace, name)

    def digests(self, spec: QuantumModelSpec) -> tuple[str, str]:
        """The spec's and the dataset's digests: what a version records and a training is keyed by."""
        return training().spec_digest(spec), self._dataset_digest(spec)

    def _dataset_digest(self, spec: QuantumModelSpec) -> str:
        """Loading and splitting the data is most of a reconcile with nothing to do: a builtin
        dataset's digest is remembered by its settings; a file's is read again (the file moves with
        the repository)."""
        if not spec.dataset.source.startswith("builtin:"):
            return training().dataset_digest(spec, repo_root=self.registry.repo)
        key = (spec.dataset.model_dump_json(), spec.circuit.qubits)
        return self._builtin_digests.get(key, lambda: training().dataset_digest(spec, repo_root=self.registry.repo))

    def governance(self, spec: QuantumModelSpec) -> Governance:
        """Governance is a function of the spec alone: judged once per spec a reconciler sees (the
        report is read, never changed, by the status built from it)."""
        return self._policies.get(spec.model_dump_json(), lambda: judge(spec))
