"""The one place that sets a QuantumModel's phase and conditions.

Conditions follow kstatus: ``Ready`` (the model serves a champion and nothing is pending),
``Reconciling`` (work under way: training, evaluating), ``Stalled`` (it cannot progress without a
change: blocked, failed, gates failed), plus one condition per stage: ``Validated``, ``Compliant``,
``Trained``, ``Promoted``. A condition's ``lastTransitionTime`` changes only when its status flips.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from controller.api.meta import Condition, ConditionStatus, ConditionType
from controller.api.quantummodel import (
    MonitoringStatus,
    Phase,
    PolicyReport,
    QuantumModelStatus,
    RuleOutcome,
    SourceRef,
    TrainingStatus,
    Usage,
    VersionRef,
)
from controller.engine.text import scrub

TrainingState = Literal["idle", "due", "running", "stopped", "failed", "done"]
PromotionState = Literal["champion", "waiting", "gates-failed", "none", "blocked"]


@dataclass
class Facts:
    """What a reconcile found out about one model, from which its status follows."""

    generation: int | None = None
    valid: bool = True
    invalid_message: str = ""
    policy: PolicyReport | None = None
    blockers: list[str] = field(default_factory=list)  # rule ids (or "promotion.pin") that block
    block_message: str = ""
    suspended: bool = False
    training_state: TrainingState = "idle"
    training_message: str = ""
    training: TrainingStatus | None = None
    latest: VersionRef | None = None
    champion: VersionRef | None = None
    promotion_state: PromotionState = "none"
    promotion_message: str = ""
    usage: Usage | None = None
    source: SourceRef | None = None
    requested_at: str | None = None
    error: str = ""  # the reconcile itself failed (Git, the cluster): the next one retries
    monitoring: Any = None  # the last monitoring report (monitoring.Report) when checks ran


_ORDER = {c.value: i for i, c in enumerate(ConditionType)}


def in_order(conditions: list[Condition]) -> list[Condition]:
    """Conditions in ConditionType's order (Ready first), others after: stable for readers and diffs."""
    return sorted(conditions, key=lambda c: _ORDER.get(c.type, len(_ORDER)))


def set_condition(
    conditions: list[Condition],
    kind: ConditionType,
    status: bool,
    reason: str,
    message: str,
    *,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """``conditions`` with ``kind`` set; its transition time kept unless the status flips."""
    value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    name = kind.value  # an enum's .value is a descriptor call: once, not per condition
    previous = next((c for c in conditions if c.type == name), None)
    moment = previous.last_transition_time if previous is not None and previous.status is value else now
    updated = Condition(
        type=name,
        status=value,
        reason=reason,
        message=scrub(message)[:32768],
        observed_generation=generation,
        last_transition_time=moment,
    )
    others = [c for c in conditions if c.type != name]
    return [*others, updated]


def phase_of(facts: Facts) -> tuple[Phase, str]:
    """The phase and the one-line message that explains it."""
    if not facts.valid:
        return Phase.FAILED, facts.invalid_message
    if facts.error:
        return Phase.FAILED, facts.error
    if facts.suspended:
        return Phase.SUSPENDED, "spec.suspend is true: nothing is trained or promoted"
    if facts.blockers:
        return Phase.BLOCKED, facts.block_message
    if facts.training_state == "failed":
        return Phase.FAILED, facts.training_message
    if facts.training_state in ("due", "running", "stopped"):
        return Phase.TRAINING, facts.training_message
    if facts.promotion_state == "waiting":
        return Phase.EVALUATING, facts.promotion_message
    if facts.champion is not None:
        return Phase.READY, facts.promotion_message or f"version {facts.champion.version} is the champion"
    return Phase.PENDING, facts.promotion_message or "no champion yet"


def build(previous: QuantumModelStatus | None, facts: Facts, now: datetime) -> QuantumModelStatus:
    """The complete status for ``facts``, carrying over transition times from ``previous``."""
    phase, message = phase_of(facts)
    message = scrub(message)
    conditions = list(previous.conditions) if previous else []
    gen = facts.generation

    def put(kind: ConditionType, status: bool, reason: str, text: str) -> None:
        nonlocal conditions
        conditions = set_condition(conditions, kind, status, reason, text, generation=gen, now=now)

    put(
        ConditionType.VALIDATED,
        facts.valid,
        "Valid" if facts.valid else "Invalid",
        facts.invalid_message or "spec is valid",
    )
    compliant, reason, text = _compliance(facts)
    put(ConditionType.COMPLIANT, compliant, reason, text)
    trained, reason, text = _trained(facts)
    put(ConditionType.TRAINED, trained, reason, text)
    promoted, reason, text = _promoted(facts)
    put(ConditionType.PROMOTED, promoted, reason, text)
    put(ConditionType.READY, phase is Phase.READY, phase.value, message)
    busy = phase in (Phase.TRAINING, Phase.EVALUATING) or (phase is Phase.PENDING and facts.latest is None)
    put(ConditionType.RECONCILING, busy, phase.value if busy else "Idle", message if busy else "")
    stalled = phase in (Phase.BLOCKED, Phase.FAILED) or (
        phase is Phase.PENDING and facts.promotion_state in ("gates-failed", "blocked")
    )
    put(ConditionType.STALLED, stalled, phase.value if stalled else "Progressing", message if stalled else "")
    return QuantumModelStatus(
        observed_generation=gen,
        phase=phase,
        message=message,
        conditions=in_order(conditions),
        source=facts.source,
        training=facts.training,
        latest_version=facts.latest,
        champion=facts.champion,
        usage=facts.usage,
        policy=facts.policy,
        monitoring=_monitoring(facts, previous),
        last_handled_reconcile_at=facts.requested_at,
    )


def _monitoring(facts: Facts, previous: QuantumModelStatus | None) -> MonitoringStatus | None:
    """status.monitoring: the last check's figures; kept from the previous status between checks."""
    report = facts.monitoring
    if report is None:
        return previous.monitoring if previous is not None else None
    gauges = report.gauges()
    champion_accuracy = facts.champion.metrics.get("accuracy") if facts.champion is not None else None
    return MonitoringStatus(
        last_check=report.checked_at,
        version=report.version,
        verdict=report.verdict.value,
        esp=gauges.get("esp"),
        esp_at_training=gauges.get("esp_at_training"),
        replay_accuracy=gauges.get("replay_accuracy"),
        live_accuracy=gauges.get("live_accuracy"),
        live_samples=int(gauges["live_samples"]) if "live_samples" in gauges else None,
        champion_accuracy=champion_accuracy,
        drifted=[c.kind.value for c in report.drifted],
    )


def _compliance(facts: Facts) -> tuple[bool, str, str]:
    if facts.blockers and any(b != "promotion.pin" for b in facts.blockers):
        return False, "PolicyViolation", facts.block_message
    if facts.policy is None:
        return True, "NotEvaluated", "governance not evaluated"
    failed = [r for r in facts.policy.results if r.result is RuleOutcome.FAIL]
    if failed:
        rules = ", ".join(r.rule for r in failed)
        return True, "AuditOnly", f"governance.enforcement is audit: rules {rules} fail and are reported only"
    return True, "PoliciesPass", f"{facts.policy.summary.pass_} rules pass"


def _trained(facts: Facts) -> tuple[bool, str, str]:
    if facts.training_state == "failed":
        return False, "TrainingFailed", facts.training_message
    if facts.training_state in ("due", "running", "stopped"):
        reason = {"due": "TrainingDue", "running": "Training", "stopped": "TrainingInterrupted"}[facts.training_state]
        return facts.latest is not None, reason, facts.training_message
    if facts.latest is not None:
        return True, "VersionRegistered", f"version {facts.latest.version} is registered"
    return False, "NotTrained", facts.training_message or "no version yet"


def _promoted(facts: Facts) -> tuple[bool, str, str]:
    reasons = {
        "waiting": "AwaitingApprovals",
        "gates-failed": "GatesFailed",
        "blocked": "PinBlocked",
        "none": "NoChampion",
        "champion": "Champion",
    }
    reason = reasons[facts.promotion_state]
    if facts.champion is not None:
        text = f"version {facts.champion.version} is the champion"
        if facts.promotion_state != "champion" and facts.promotion_message:
            text += f"; {facts.promotion_message}"
        return True, "Champion" if facts.promotion_state == "champion" else reason, text
    return False, reason, facts.promotion_message or "no champion yet"


# --- what the shells write without a full reconcile ----------------------------------------------------

MAX_FAILURE_TEXT = 500


def describe_failure(err: BaseException) -> str:
    """A failure as one line for status, events and the ledger: the error's kind and its own message,
    scrubbed of secrets (an error from a library can quote a header or a URL) and bounded."""
    text = scrub(" ".join(str(err).split())) or type(err).__name__
    if len(text) > MAX_FAILURE_TEXT:
        text = text[: MAX_FAILURE_TEXT - 1] + "…"
    return text if text.startswith(type(err).__name__) else f"{type(err).__name__}: {text}"


def _previous(previous: Mapping[str, Any] | QuantumModelStatus | None) -> QuantumModelStatus | None:
    if previous is None or isinstance(previous, QuantumModelStatus):
        return previous
    try:
        return QuantumModelStatus.model_validate(dict(previous))
    except ValidationError:
        return None


def _carry(previous: QuantumModelStatus | None, facts: Facts) -> Facts:
    if previous is not None:
        facts.latest, facts.champion = previous.latest_version, previous.champion
        facts.usage, facts.source, facts.policy = previous.usage, previous.source, previous.policy
        facts.requested_at = previous.last_handled_reconcile_at
        if facts.champion is not None:
            facts.promotion_state = "champion"
    return facts


def _kept(
    previous: Mapping[str, Any] | QuantumModelStatus | None, facts: Facts, now: datetime | None
) -> dict[str, Any]:
    """The status (wire form) of ``facts`` over what the model had: versions, champion, usage, source,
    policy and the last reconcile request handled are kept."""
    before = _previous(previous)
    return build(before, _carry(before, facts), now or datetime.now(UTC)).to_wire()


def invalid(
    previous: Mapping[str, Any] | QuantumModelStatus | None,
    message: str,
    generation: int | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A model whose spec the types refuse: Failed, Validated False."""
    return _kept(previous, Facts(generation=generation, valid=False, invalid_message=message or "spec is invalid"), now)


def failed(
    previous: Mapping[str, Any] | QuantumModelStatus | None,
    err: BaseException,
    generation: int | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """After a reconcile that raised: Failed, with the error's message."""
    facts = Facts(generation=generation, training_state="failed", training_message=describe_failure(err))
    return _kept(previous, facts, now)


def training_due(
    previous: Mapping[str, Any] | QuantumModelStatus | None,
    message: str,
    generation: int | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A model whose training is due but not started yet: Training, Reconciling, Trained False
    (TrainingDue)."""
    return _kept(previous, Facts(generation=generation, training_state="due", training_message=message), now)
