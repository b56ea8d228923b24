"""What a reconcile reads: the observed object, the registry's history of the model, and the training
that history makes due. Reading only; nothing here writes."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.api import limits
from controller.api.quantummodel import QuantumModel, QuantumModelSpec, SourceRef
from controller.engine import governance
from controller.engine.decisions import LedgerKind
from controller.engine.registry.canonical import digest_of
from controller.engine.registry.ledger import Ledger, format_time, parse_time
from controller.engine.registry.versions import Version


def training() -> Any:
    """The training engine, imported on first use: planning, auditing and ``--help`` do not load Qiskit."""
    return importlib.import_module("controller.engine.training")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Observed:
    """What a shell observed about one QuantumModel."""

    model: QuantumModel
    source: SourceRef = field(default_factory=SourceRef)
    requested_at: str | None = None
    # the backends the evaluate steps of the model's pipelines score on (compliance packs ask for an
    # accuracy measured on each)
    pipeline_backends: tuple[str, ...] = ()


@dataclass
class State:
    """A model's spec and its registry as a reconcile sees them; ``ledger`` and ``versions`` are read
    again after every decision the recorder applies (or, when planning, extended in memory)."""

    namespace: str
    name: str
    spec: QuantumModelSpec
    ledger: Ledger
    versions: list[Version]
    now: datetime
    policy: Any = None  # controller.engine.policy.Effective: the QuantumPolicy floors in ``spec``, and whose

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

    @property
    def candidates(self) -> list[int]:
        """The versions the model's own gates and promotion consider: those its own spec trained and
        those a pipeline run selected (a pipeline's other candidates are never promoted unless pinned)."""
        selected = {e.version for e in self.ledger.of_kind(LedgerKind.SELECTED)}
        return [v.number for v in self.versions if v.pipeline is None or v.number in selected]

    def trained_from(self, spec_digest: str) -> Version | None:
        """The newest version the model's training is measured against: its own newest, or a newer one a
        pipeline trained from this very spec (then the model need not train it again)."""
        found = [v for v in self.versions if v.pipeline is None or v.spec_digest == spec_digest]
        return found[-1] if found else None


@dataclass(frozen=True)
class Due:
    """Why a training is due, and the key its checkpoint and artifact are kept under."""

    reason: str
    key: str
    spec_digest: str
    dataset_digest: str
    after: int = 0  # the ledger's newest entry (seq) when it was decided: a registration of the same
    # key after it means another controller ran this very training meanwhile (it is not registered twice)


@dataclass(frozen=True)
class Governance:
    """Governance's verdict on a spec: the rules that block (empty: none), the message, the report."""

    blockers: tuple[str, ...]
    message: str
    report: Any


def judge(spec: QuantumModelSpec) -> Governance:
    report = governance.evaluate(spec)
    blockers = governance.blocking(report, spec)
    text = "; ".join(f"blocked by rule {r.rule}: {r.message}" for r in blockers)
    return Governance(tuple(r.rule for r in blockers), text, report)


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
    """The training the model's own spec makes due: no version yet, the spec or the dataset changed
    since the latest version, or the cron schedule came due."""
    base = f"{spec_digest}|{dataset_digest}" + limits.timeout_key(state.spec.training)  # retried on a new timeout
    latest = state.trained_from(spec_digest)

    def due(reason: str, slot: str = "") -> Due:
        last = state.ledger.last
        return Due(reason, digest_of([base, slot])[7:23], spec_digest, dataset_digest, last.seq if last else 0)

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
    drift = drift_to_retrain(state)
    if drift is not None:
        return due(f"a drift was detected ({drift.data.get('check')}: {drift.message})", drift.digest)
    return None


def drift_to_retrain(state: State) -> Any:
    """The last ``drift-detected`` entry asking to retrain (``onDrift: retrain``) that no version was
    registered after: each drift retrains once."""
    entries = state.ledger.entries
    for entry in reversed(entries):
        if entry.kind == LedgerKind.REGISTERED:
            return None
        if entry.kind == LedgerKind.DRIFT_DETECTED and "retrain" in (entry.data.get("actions") or []):
            return entry
    return None
