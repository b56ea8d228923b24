"""Status: phase and conditions from what a reconcile found; transition times move only on flips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.api.meta import ConditionStatus
from controller.api.quantummodel import Phase, VersionRef
from controller.engine import status

T0 = datetime(2025, 1, 1, tzinfo=UTC)
CHAMPION = VersionRef(version=1, digest="sha256:" + "a" * 64, metrics={"accuracy": 0.9})


def conditions(result: object) -> dict[str, tuple[ConditionStatus, str]]:
    return {c.type: (c.status, c.reason) for c in result.conditions}  # type: ignore[attr-defined]


def test_a_model_with_a_champion_is_ready() -> None:
    facts = status.Facts(generation=3, latest=CHAMPION, champion=CHAMPION, promotion_state="champion")
    result = status.build(None, facts, T0)
    assert result.phase is Phase.READY and result.observed_generation == 3
    found = conditions(result)
    assert found["Ready"][0] is ConditionStatus.TRUE
    assert found["Stalled"][0] is ConditionStatus.FALSE
    assert found["Promoted"] == (ConditionStatus.TRUE, "Champion")
    assert [c.type for c in result.conditions] == [
        "Ready",
        "Reconciling",
        "Stalled",
        "Validated",
        "Compliant",
        "Trained",
        "Promoted",
    ]


def test_blocked_and_failed_are_stalled() -> None:
    blocked = status.build(None, status.Facts(blockers=["allowed-backends"], block_message="blocked by rule x"), T0)
    assert blocked.phase is Phase.BLOCKED
    assert conditions(blocked)["Stalled"] == (ConditionStatus.TRUE, "Blocked")
    assert conditions(blocked)["Compliant"] == (ConditionStatus.FALSE, "PolicyViolation")
    failed = status.build(None, status.Facts(training_state="failed", training_message="bad data"), T0)
    assert failed.phase is Phase.FAILED and failed.message == "bad data"
    assert conditions(failed)["Trained"] == (ConditionStatus.FALSE, "TrainingFailed")


def test_transition_time_changes_only_when_a_condition_flips() -> None:
    first = status.build(None, status.Facts(training_state="running", training_message="training"), T0)
    later = T0 + timedelta(minutes=5)
    second = status.build(first, status.Facts(training_state="running", training_message="iteration 3"), later)
    ready = {c.type: c.last_transition_time for c in second.conditions}
    assert ready["Reconciling"] == T0 and ready["Ready"] == T0
    done = status.build(second, status.Facts(latest=CHAMPION, champion=CHAMPION, promotion_state="champion"), later)
    times = {c.type: c.last_transition_time for c in done.conditions}
    assert times["Ready"] == later and times["Reconciling"] == later and times["Validated"] == T0


def test_the_shells_helpers_keep_what_the_model_had() -> None:
    facts = status.Facts(latest=CHAMPION, champion=CHAMPION, promotion_state="champion", requested_at="2026-01-01")
    before = status.build(None, facts, T0)
    wire = status.failed(before.to_wire(), RuntimeError("git push: remote hung up"), 4, T0)
    assert wire["phase"] == "Failed" and wire["champion"]["version"] == 1
    assert wire["lastHandledReconcileAt"] == "2026-01-01", "a request once answered stays answered"
    due = status.training_due(before.to_wire(), "training because the spec changed", 5, T0)
    assert due["phase"] == "Training" and due["champion"]["version"] == 1 and due["observedGeneration"] == 5
    found = {c["type"]: (c["status"], c["reason"]) for c in due["conditions"]}
    assert found["Reconciling"] == ("True", "Training") and found["Trained"] == ("True", "TrainingDue")
    assert wire["message"] == "RuntimeError: git push: remote hung up"
    invalid = status.invalid({}, "spec.circuit.qubits: required", 5, T0)
    assert invalid["phase"] == "Failed"
    assert {c["type"]: c["status"] for c in invalid["conditions"]}["Validated"] == "False"
