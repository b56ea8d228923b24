"""Promotion: gates, the champion to beat, approvals, policy and pins. Pure decisions, no I/O.

- Gates: each ``{metric, min, max}`` bounds the candidate's metric on its test split.
- ``beatChampionBy``: the candidate's test accuracy must exceed the champion's by at least that much,
  both measured on the same test split (the caller re-scores the champion when the split changed).
- ``requiredApprovals``: distinct approvers listed in ``governance.approvers`` (see registry.approvals).
- ``policy: auto`` promotes the newest version once it passes its gates and has its approvals;
  ``policy: manual`` also needs at least one approval; a version is promoted automatically only once.
- ``pin: N`` makes version N the champion (forward: promoted, backward: rolled-back), without gates:
  the reviewed change to the spec is the decision. A pin to a missing or retired version blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from controller.api.quantummodel import PromotionPolicy, QuantumModelSpec
from controller.engine.decisions import LedgerKind
from controller.engine.registry.ledger import Ledger
from controller.engine.registry.versions import Version

CHAMPION_METRIC = "accuracy"
LOWER_IS_BETTER = frozenset({"loss"})


@dataclass(frozen=True)
class GateOutcome:
    """One gate's verdict on one version."""

    gate: str
    metric: str
    value: float | None
    passed: bool
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"gate": self.gate, "metric": self.metric, "value": self.value, "passed": self.passed}


@dataclass(frozen=True)
class ChampionScore:
    """The champion's value of the comparison metric on the candidate's test split."""

    version: int
    value: float | None
    how: str  # "recorded" (same split) or "re-scored on the candidate's test split", or why it is missing


@dataclass(frozen=True)
class GateReport:
    version: int
    results: tuple[GateOutcome, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def kind(self) -> LedgerKind:
        return LedgerKind.GATE_PASSED if self.passed else LedgerKind.GATE_FAILED

    def message(self) -> str:
        if not self.results:
            return f"version {self.version} has no gates to pass"
        failed = [r.message for r in self.results if not r.passed]
        if failed:
            return f"version {self.version} fails its gates: " + "; ".join(failed)
        return f"version {self.version} passes its gates: " + "; ".join(r.message for r in self.results)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "results": [r.to_json() for r in self.results]}


def _gate_text(metric: str, low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f"{low:g} <= {metric} <= {high:g}"
    return f"{metric} >= {low:g}" if low is not None else f"{metric} <= {high:g}"


def evaluate_gates(spec: QuantumModelSpec, candidate: Version, champion: ChampionScore | None) -> GateReport:
    """Every gate of ``spec`` and ``beatChampionBy`` applied to ``candidate``."""
    metrics = candidate.scalar_metrics()
    results: list[GateOutcome] = []
    for gate in spec.promotion.gates:
        metric = gate.metric.value
        text = _gate_text(metric, gate.min, gate.max)
        value = metrics.get(metric)
        if value is None:
            results.append(GateOutcome(text, metric, None, False, f"{text}: version has no {metric} metric"))
            continue
        ok = (gate.min is None or value >= gate.min) and (gate.max is None or value <= gate.max)
        results.append(GateOutcome(text, metric, value, ok, f"{text} ({metric} {value:.4g})"))
    margin = spec.promotion.beat_champion_by
    if margin is not None and champion is not None and champion.version != candidate.number:
        results.append(_beat_champion(metrics.get(CHAMPION_METRIC), margin, champion))
    return GateReport(candidate.number, tuple(results))


def _beat_champion(value: float | None, margin: float, champion: ChampionScore) -> GateOutcome:
    text = f"{CHAMPION_METRIC} beats champion by {margin:g}"
    if value is None:
        return GateOutcome(text, CHAMPION_METRIC, None, False, f"{text}: version has no {CHAMPION_METRIC} metric")
    if champion.value is None:
        return GateOutcome(text, CHAMPION_METRIC, value, False, f"{text}: {champion.how}")
    ok = value >= champion.value + margin - 1e-12
    detail = f"{value:.4g} vs champion version {champion.version}'s {champion.value:.4g} ({champion.how})"
    return GateOutcome(text, CHAMPION_METRIC, value, ok, f"{text}: {detail}")


# --- deciding what to promote ----------------------------------------------------------------------


class PromotionAction(StrEnum):
    """What promotion does next."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    BLOCK = "block"
    WAIT = "wait"
    NOTHING = "nothing"
    EVALUATE = "evaluate"


class Standing(StrEnum):
    """Why promotion does what it does: the case of :func:`decide` that applied (``reason`` says it
    in words for people; code reads this)."""

    NO_VERSION = "no-version"
    CHAMPION = "champion"  # the newest (or pinned) version is the champion already
    REPLACED_BEFORE = "replaced-before"  # the newest version was champion once and was replaced
    GATES_NOT_EVALUATED = "gates-not-evaluated"
    GATES_FAILED = "gates-failed"
    AWAITING_APPROVALS = "awaiting-approvals"
    PASSES = "passes"  # gates passed, approvals in: promote
    PINNED = "pinned"  # a pin moves the champion
    PIN_MISSING = "pin-missing"  # the pinned version does not exist: blocked


@dataclass(frozen=True)
class PromotionStep:
    """What promotion would do now, and why."""

    action: PromotionAction
    version: int | None
    reason: str
    standing: Standing

    @property
    def decision(self) -> LedgerKind | None:
        """The ledger kind that carrying the step out writes."""
        return _DECISIONS.get(self.action)


_DECISIONS = {
    PromotionAction.PROMOTE: LedgerKind.PROMOTED,
    PromotionAction.ROLLBACK: LedgerKind.ROLLED_BACK,
    PromotionAction.BLOCK: LedgerKind.BLOCKED,
}


def approvals_needed(spec: QuantumModelSpec) -> int:
    needed = spec.promotion.required_approvals
    if spec.promotion.policy is PromotionPolicy.MANUAL:
        return max(needed, 1)
    return needed


def counted_approvers(spec: QuantumModelSpec, ledger: Ledger, version: int, now: datetime | None = None) -> set[str]:
    """Distinct approvers of ``version`` recorded in the ledger who are listed in the spec now, whose
    approval has not expired by ``now``."""
    listed = {a.lower() for a in spec.governance.approvers}
    signed_only = spec.governance.require_signed_approvals
    return ledger.approvers(version, signed_only=signed_only, at=now) & listed


def approve_hint(namespace: str, name: str, version: int) -> str:
    return f"approve with a commit carrying the trailer 'Qmlops-Approve: {namespace}/{name}@{version}'"


def decide(
    spec: QuantumModelSpec,
    ledger: Ledger,
    registered: list[int],
    *,
    namespace: str,
    name: str,
    now: datetime | None = None,
) -> PromotionStep:
    """The next promotion step for a model whose versions are ``registered`` and history ``ledger``;
    approvals count only when they have not expired by ``now``."""
    champion = ledger.champion()
    pin = spec.promotion.pin
    if pin is not None:
        retired = ledger.retired().get(pin)
        if retired is not None and pin not in registered:
            why = f"promotion.pin: version {pin} was retired (ledger entry {retired.seq}: {retired.message})"
            return PromotionStep(PromotionAction.BLOCK, pin, why, Standing.PIN_MISSING)
        return _pinned(pin, champion, registered)
    if not registered:
        return PromotionStep(PromotionAction.NOTHING, None, "no version registered yet", Standing.NO_VERSION)
    latest = max(registered)
    if latest == champion:
        return PromotionStep(PromotionAction.NOTHING, latest, f"version {latest} is the champion", Standing.CHAMPION)
    if ledger.ever_champion(latest):
        why = f"version {latest} was champion before and was replaced; pin it to promote it again"
        return PromotionStep(PromotionAction.NOTHING, champion, why, Standing.REPLACED_BEFORE)
    gate = ledger.gate_entry(latest)
    if gate is None:
        why = f"version {latest} is registered and its gates are not evaluated"
        return PromotionStep(PromotionAction.EVALUATE, latest, why, Standing.GATES_NOT_EVALUATED)
    if gate.kind != LedgerKind.GATE_PASSED:
        stays = f"; the champion stays version {champion}" if champion else ""
        return PromotionStep(PromotionAction.NOTHING, latest, f"{gate.message}{stays}", Standing.GATES_FAILED)
    needed = approvals_needed(spec)
    have = counted_approvers(spec, ledger, latest, now)
    if len(have) < needed:
        if not spec.governance.approvers:
            why = "governance.approvers lists nobody: pin a version to promote it"
        else:
            why = approve_hint(namespace, name, latest)
        lapsed = ledger.expired_approvals(latest, now) if now is not None else []
        if lapsed:
            why += f"; {len(lapsed)} recorded approval{'s' if len(lapsed) != 1 else ''} expired"
        return PromotionStep(
            PromotionAction.WAIT,
            latest,
            f"version {latest} passed its gates and awaits approvals: {len(have)} of {needed} ({why})",
            Standing.AWAITING_APPROVALS,
        )
    approved = f" and has {len(have)} approval{'s' if len(have) != 1 else ''}" if needed else ""
    return PromotionStep(
        PromotionAction.PROMOTE, latest, f"version {latest} passes its gates{approved}", Standing.PASSES
    )


def _pinned(pin: int, champion: int | None, registered: list[int]) -> PromotionStep:
    if pin not in registered:
        have = f"the latest is version {max(registered)}" if registered else "no version is registered yet"
        why = f"promotion.pin: version {pin} does not exist ({have})"
        return PromotionStep(PromotionAction.BLOCK, pin, why, Standing.PIN_MISSING)
    if pin == champion:
        return PromotionStep(
            PromotionAction.NOTHING, pin, f"version {pin} is pinned and is the champion", Standing.CHAMPION
        )
    if champion is not None and pin < champion:
        why = f"promotion.pin rolls back from version {champion} to version {pin}"
        return PromotionStep(PromotionAction.ROLLBACK, pin, why, Standing.PINNED)
    return PromotionStep(PromotionAction.PROMOTE, pin, f"promotion.pin promotes version {pin}", Standing.PINNED)
