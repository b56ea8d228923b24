"""The engine's decisions, typed: what a ledger entry records, what ``qmlops plan`` says a reconcile
would do. Control flow compares these enums, never the human messages that go with them.

They are ``StrEnum``: a member is equal to, prints as and serialises as its value, so the ledger's
JSON, the CLI's output and the Kubernetes Event reasons are the words they always were.
"""

from __future__ import annotations

from enum import StrEnum


class LedgerKind(StrEnum):
    """The kind of one ledger entry (``registry/<namespace>/<name>/ledger.jsonl``)."""

    # a QuantumModel's decisions
    REGISTERED = "registered"
    GATE_PASSED = "gate-passed"
    GATE_FAILED = "gate-failed"
    APPROVED = "approved"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled-back"
    BLOCKED = "blocked"
    FAILED = "failed"
    STOPPED = "stopped"  # a training stopped mid-way (Ctrl-C, shutdown, deletion): what its jobs spent so far
    DRIFT_DETECTED = "drift-detected"  # a monitoring check saw the champion drift (issue 11)
    SUPERSEDED = "superseded"  # a finished training another controller registered first: not again
    RETIRED = "retired"  # a version beyond retention.maxVersions retired (issue 12)
    # a QuantumPipeline run's life (issue 10: runs, evaluations, selection)
    RUN_STARTED = "run-started"
    STEP_SUCCEEDED = "step-succeeded"
    STEP_FAILED = "step-failed"
    RUN_FINISHED = "run-finished"
    EVALUATED = "evaluated"
    SELECTED = "selected"

    @property
    def warns(self) -> bool:
        """Whether the decision is bad news (a Kubernetes Event of type Warning)."""
        return self in WARNING_KINDS

    @property
    def event_reason(self) -> str:
        """The Kubernetes Event reason: ``gate-failed`` -> ``GateFailed``."""
        return "".join(part.capitalize() for part in self.value.split("-"))


MODEL_KINDS = frozenset(
    {
        LedgerKind.REGISTERED,
        LedgerKind.GATE_PASSED,
        LedgerKind.GATE_FAILED,
        LedgerKind.APPROVED,
        LedgerKind.PROMOTED,
        LedgerKind.ROLLED_BACK,
        LedgerKind.BLOCKED,
        LedgerKind.FAILED,
        LedgerKind.STOPPED,
        LedgerKind.DRIFT_DETECTED,
        LedgerKind.SUPERSEDED,
        LedgerKind.RETIRED,
    }
)
PIPELINE_KINDS = frozenset(LedgerKind) - MODEL_KINDS
CHAMPION_KINDS = (LedgerKind.PROMOTED, LedgerKind.ROLLED_BACK)  # entries that make a version the champion
GATE_KINDS = (LedgerKind.GATE_PASSED, LedgerKind.GATE_FAILED)
WARNING_KINDS = frozenset(
    {
        LedgerKind.GATE_FAILED,
        LedgerKind.BLOCKED,
        LedgerKind.FAILED,
        LedgerKind.STEP_FAILED,
        LedgerKind.DRIFT_DETECTED,
        LedgerKind.SUPERSEDED,
    }
)


class PlanAction(StrEnum):
    """What a reconcile would do next, as ``qmlops plan`` prints it."""

    TRAIN = "train"
    REGISTER = "register"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    BLOCK = "block"
    WAIT = "wait"
    SUSPEND = "suspend"
    RUN = "run"  # a QuantumPipeline's run starts or goes on
    RETIRE = "retire"  # versions beyond retention.maxVersions are retired
    NOTHING = "nothing"
