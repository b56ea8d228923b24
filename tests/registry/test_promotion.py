"""Promotion decisions: gates, beating the champion, distinct approvers, policies and pins."""

from __future__ import annotations

from typing import Any

from controller.api import QuantumModelSpec
from controller.engine import promotion
from controller.engine.decisions import LedgerKind
from controller.engine.registry import Provenance
from controller.engine.registry import versions as version_files
from controller.engine.registry.ledger import Entry, Ledger, draft
from controller.engine.registry.versions import Version

BASE: dict[str, Any] = {
    "owner": "alice@example.com",
    "dataset": {"source": "builtin:iris", "features": ["petal_length", "petal_width"], "classes": [0, 1]},
    "circuit": {"qubits": 2},
    "governance": {"approvers": ["alice@example.com", "bob@example.com", "carol@example.com"]},
}


def spec(**promo: Any) -> QuantumModelSpec:
    return QuantumModelSpec.model_validate({**BASE, "promotion": promo})


def version(number: int, accuracy: float, *, dataset: str = "sha256:d", loss: float = 0.3) -> Version:
    manifest = version_files.manifest(
        namespace="demo",
        name="m",
        number=number,
        registered_at="2025-01-01T00:00:00Z",
        source=Provenance(None, None, None, None),
        spec_digest="sha256:s",
        dataset_digest=dataset,
        artifact={"metrics": {"accuracy": accuracy, "loss": loss, "confusion": [[1, 0], [0, 1]]}},
        artifact_digest=f"sha256:{number}",
    )
    return Version(number, manifest)


class History:
    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def add(self, kind: str, version: int | None, **data: Any) -> History:
        last = self.entries[-1] if self.entries else None
        self.entries.append(
            draft(last, at="2025-01-01T00:00:00Z", kind=kind, model="demo/m", version=version, message=kind, data=data)
        )
        return self

    @property
    def ledger(self) -> Ledger:
        return Ledger(tuple(self.entries))


def test_gates_bound_metrics_from_below_and_above() -> None:
    s = spec(gates=[{"metric": "accuracy", "min": 0.8}, {"metric": "loss", "max": 0.5}])
    assert promotion.evaluate_gates(s, version(1, 0.85), None).passed
    failing = promotion.evaluate_gates(s, version(1, 0.75, loss=0.6), None)
    assert not failing.passed
    assert failing.message() == "version 1 fails its gates: accuracy >= 0.8 (accuracy 0.75); loss <= 0.5 (loss 0.6)"
    missing = promotion.evaluate_gates(spec(gates=[{"metric": "f1", "min": 0.1}]), version(1, 0.9), None)
    assert not missing.passed and "has no f1 metric" in missing.message()


def test_beat_champion_by_compares_accuracy_on_the_same_split() -> None:
    s = spec(beatChampionBy=0.05)
    same = promotion.ChampionScore(1, 0.80, "same test split")
    assert promotion.evaluate_gates(s, version(2, 0.86), same).passed
    assert not promotion.evaluate_gates(s, version(2, 0.84), same).passed
    unknown = promotion.ChampionScore(1, None, "champion not re-scored on the new test split: boom")
    report = promotion.evaluate_gates(s, version(2, 0.99), unknown)
    assert not report.passed and "not re-scored" in report.message()
    assert promotion.evaluate_gates(s, version(1, 0.5), None).passed  # no champion yet: nothing to beat


def test_auto_promotes_the_newest_version_that_passed_its_gates() -> None:
    h = History().add("registered", 1).add("gate-passed", 1)
    step = promotion.decide(spec(), h.ledger, [1], namespace="demo", name="m")
    assert (step.action, step.version, step.decision) == ("promote", 1, "promoted")
    h.add("promoted", 1)
    assert promotion.decide(spec(), h.ledger, [1], namespace="demo", name="m").action == "nothing"
    h.add("registered", 2).add("gate-failed", 2)
    step = promotion.decide(spec(), h.ledger, [1, 2], namespace="demo", name="m")
    assert step.action == "nothing" and "champion stays version 1" in step.reason


def test_required_approvals_count_distinct_listed_approvers() -> None:
    s = spec(requiredApprovals=2)
    h = History().add("registered", 1).add("gate-passed", 1)
    h.add("approved", 1, approver="bob@example.com", commit="c1")
    h.add("approved", 1, approver="BOB@example.com", commit="c2")  # the same person twice
    h.add("approved", 1, approver="eve@example.com", commit="c3")  # not listed
    step = promotion.decide(s, h.ledger, [1], namespace="demo", name="m")
    assert step.action == "wait"
    assert "1 of 2" in step.reason and "Qmlops-Approve: demo/m@1" in step.reason
    h.add("approved", 1, approver="carol@example.com", commit="c4")
    assert promotion.decide(s, h.ledger, [1], namespace="demo", name="m").action == "promote"


def test_manual_policy_needs_an_approval_even_when_none_are_required() -> None:
    h = History().add("registered", 1).add("gate-passed", 1)
    assert promotion.decide(spec(policy="manual"), h.ledger, [1], namespace="demo", name="m").action == "wait"
    h.add("approved", 1, approver="alice@example.com", commit="c1")
    assert promotion.decide(spec(policy="manual"), h.ledger, [1], namespace="demo", name="m").action == "promote"


def test_signed_only_approvals_when_governance_requires_them() -> None:
    s = QuantumModelSpec.model_validate(
        {
            **BASE,
            "promotion": {"requiredApprovals": 1},
            "governance": {**BASE["governance"], "requireSignedApprovals": True},
        }
    )
    h = History().add("registered", 1).add("gate-passed", 1)
    h.add("approved", 1, approver="bob@example.com", commit="c1", signed=False)
    assert promotion.decide(s, h.ledger, [1], namespace="demo", name="m").action == "wait"
    h.add("approved", 1, approver="bob@example.com", commit="c2", signed=True)
    assert promotion.decide(s, h.ledger, [1], namespace="demo", name="m").action == "promote"


def test_pins_roll_forward_and_back_and_block_when_missing() -> None:
    h = History().add("registered", 1).add("gate-passed", 1).add("promoted", 1)
    h.add("registered", 2).add("gate-passed", 2).add("promoted", 2)
    back = promotion.decide(spec(pin=1), h.ledger, [1, 2], namespace="demo", name="m")
    assert (back.action, back.version, back.decision) == ("rollback", 1, "rolled-back")
    h.add("rolled-back", 1)
    assert promotion.decide(spec(pin=1), h.ledger, [1, 2], namespace="demo", name="m").action == "nothing"
    # unpinned, the rolled-back champion stays: version 2 was champion before and is not promoted again
    unpinned = promotion.decide(spec(), h.ledger, [1, 2], namespace="demo", name="m")
    assert unpinned.action == "nothing" and "pin it to promote it again" in unpinned.reason
    forward = promotion.decide(spec(pin=2), h.ledger, [1, 2], namespace="demo", name="m")
    assert (forward.action, forward.decision) == ("promote", "promoted")
    missing = promotion.decide(spec(pin=7), h.ledger, [1, 2], namespace="demo", name="m")
    assert missing.action == "block"
    assert missing.reason == "promotion.pin: version 7 does not exist (the latest is version 2)"


def test_a_pin_skips_gates() -> None:
    h = History().add("registered", 1).add("gate-failed", 1)
    step = promotion.decide(spec(pin=1), h.ledger, [1], namespace="demo", name="m")
    assert step.action == "promote"


# --- decisions are enums: nothing reads the message ----------------------------------------------------


def test_failed_gates_stall_the_model_whatever_the_gate_entry_says() -> None:
    """The status follows promotion's Standing, not its words: a gate-failed entry with any message
    (here the bare kind, as written by a release with other wording) stalls a model without a champion."""
    from datetime import UTC, datetime

    from controller.api.meta import ConditionType
    from controller.engine import status
    from controller.engine.reconcile import State
    from controller.engine.reconcile.actions import promote
    from controller.engine.reconcile.intents import summarise

    s = spec(gates=[{"metric": "accuracy", "min": 0.9}])
    h = History().add(LedgerKind.REGISTERED, 1).add(LedgerKind.GATE_FAILED, 1)
    assert "fails its gates" not in h.ledger.entries[-1].message
    step = promotion.decide(s, h.ledger, [1], namespace="demo", name="m")
    assert (step.action, step.standing) == (promotion.PromotionAction.NOTHING, promotion.Standing.GATES_FAILED)
    now = datetime(2025, 1, 2, tzinfo=UTC)
    intents, verdict = promote(State("demo", "m", s, h.ledger, [version(1, 0.6)], now), step)
    facts = status.Facts()
    for intent in intents:
        summarise(intent, facts)
    built = status.build(None, facts, now)
    stalled = next(c for c in built.conditions if c.type == ConditionType.STALLED.value)
    promoted = next(c for c in built.conditions if c.type == ConditionType.PROMOTED.value)
    assert (verdict.action, stalled.status.value, promoted.reason) == ("nothing", "True", "GatesFailed")


def test_each_promotion_step_names_the_ledger_kind_it_writes() -> None:
    h = History().add(LedgerKind.REGISTERED, 1).add(LedgerKind.GATE_PASSED, 1)
    step = promotion.decide(spec(), h.ledger, [1], namespace="demo", name="m")
    assert (step.action, step.standing, step.decision) == (
        promotion.PromotionAction.PROMOTE,
        promotion.Standing.PASSES,
        LedgerKind.PROMOTED,
    )
    missing = promotion.decide(spec(pin=4), h.ledger, [1], namespace="demo", name="m")
    assert (missing.standing, missing.decision) == (promotion.Standing.PIN_MISSING, LedgerKind.BLOCKED)
