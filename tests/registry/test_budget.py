"""A budget that counts everything: the QPU seconds and shots of a training that failed are kept in its
``failed`` ledger entry and count against governance.qpuBudgetSeconds, as evaluations a pipeline
recorded do (issue 12). Real reconciles on a real repository; IBM is the offline stand-in."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

from controller.engine.reconcile import Reconciler
from controller.engine.reconcile.state import Due
from controller.engine.registry import Registry
from controller.engine.registry.ledger import Ledger, draft, entry_from_json
from controller.engine.training import Credentials, TrainingStopped
from controller.runner.specs import observe
from tests.registry.repos import Repos, tiny_spec
from tests.training.standin import installed

pytestmark = pytest.mark.slow

SPEC = "specs/tiny.yaml"


def ibm_spec(seed: int, budget: float) -> str:
    """3 iterations on IBM, estimated at 8.3 QPU seconds; the stand-in bills 1.5 s a job."""
    governance = f'    allowedBackends: ["ibm:*"]\n    qpuBudgetSeconds: {budget}'
    text = tiny_spec(iterations=3, governance=governance).replace("seed: 7", f"seed: {seed}")
    return text.replace(
        "backend: local:statevector", "backend: ibm:fake_lima\n    executionMode: job\n    credentialsSecret: ibm"
    )


def failing_job() -> BaseException:
    return RuntimeJobFailureError("Error code 1305; Job cancelled: instance limit")


def reconcile(
    work: Path, tmp: Path, clock: Callable[[], datetime] | None = None, should_stop: Callable[[], bool] | None = None
) -> Any:
    registry = Registry(work)
    rec = Reconciler(
        registry,
        checkpoint_root=tmp / "ckpt",
        credentials=lambda namespace, name: Credentials(token="tok-0123456789", instance="crn:standin"),
        **({"clock": clock} if clock else {}),
    )
    registry.sync()
    [(observed, _)] = observe(registry.git, work / "specs").models
    return rec.reconcile(observed, should_stop=should_stop)


def entries(work: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (work / "registry/demo/tiny/ledger.jsonl").read_text().splitlines()]


def test_failed_trainings_spend_the_budget_and_the_next_one_is_refused(repos: Repos, tmp_path: Path) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, ibm_spec(7, 10), "tiny on IBM")
    with installed(seconds_per_job=1.5, faults={3: failing_job()}) as factory:
        first = reconcile(work, tmp_path)
    assert factory.calls == 3  # two jobs ran (3 QPU seconds), the third failed
    [failed] = entries(work)
    assert failed["kind"] == "failed" and failed["data"]["usage"] == {
        "qpuSeconds": 3.0,
        "primitiveJobs": 2.0,
        "shots": failed["data"]["usage"]["shots"],
    }
    assert first.status.usage is not None and first.status.usage.qpu_seconds == 3.0
    repos.commit_file(work, SPEC, ibm_spec(8, 10), "try again")
    with installed(seconds_per_job=1.5) as factory:
        second = reconcile(work, tmp_path)
    assert factory.calls == 0  # 3 of 10 seconds spent: the 8.3 s the training needs do not fit
    assert [e["kind"] for e in entries(work)] == ["failed", "failed"]
    refused = entries(work)[1]
    assert "governance.qpuBudgetSeconds: 10 s per 30 days; 3.0 s used before" in refused["message"]
    assert "usage" not in refused["data"]  # it spent nothing
    assert second.status.usage is not None and second.status.usage.qpu_seconds == 3.0


def test_evaluations_and_failed_steps_recorded_with_usage_count_in_the_budget() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    at = "2026-01-01T00:00:00Z"
    ledger = Ledger()
    for kind, usage in (
        ("registered", {"qpuSeconds": 1.0, "shots": 100}),
        ("failed", {"qpuSeconds": 2.0, "shots": 10}),
        ("evaluated", {"qpuSeconds": 4.0, "shots": 1000}),
        ("step-failed", {"qpuSeconds": 8.0}),
        ("promoted", {"qpuSeconds": 100.0}),  # a promotion spends nothing, whatever its data says
    ):
        entry = draft(ledger.last, at=at, kind=kind, model="demo/tiny", version=1, message=kind, data={"usage": usage})
        ledger = Ledger((*ledger.entries, entry))
    assert ledger.qpu_seconds(now) == 15.0
    assert ledger.usage(now)["shots"] == 1110


def test_the_budget_counts_over_the_window_the_spec_says(repos: Repos, tmp_path: Path) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, ibm_spec(7, 10), "tiny on IBM")
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    with installed(seconds_per_job=1.5, faults={3: failing_job()}):
        reconcile(work, tmp_path, lambda: now[0])  # 3 QPU seconds spent, recorded in its failed entry
    now[0] += timedelta(days=40)  # out of the default 30 days, inside a 60-day window
    sixty = ibm_spec(8, 10).replace("    qpuBudgetSeconds: 10", "    qpuBudgetSeconds: 10\n    qpuBudgetWindow: 60d")
    repos.commit_file(work, SPEC, sixty, "count over 60 days")
    with installed(seconds_per_job=1.5) as factory:
        refused = reconcile(work, tmp_path, lambda: now[0])
    assert factory.calls == 0  # 3 of 10 seconds spent in 60 days: the 8.3 s the training needs do not fit
    assert "governance.qpuBudgetSeconds: 10 s per 60 days; 3.0 s used before" in entries(work)[-1]["message"]
    assert refused.status.usage is not None
    assert (refused.status.usage.qpu_seconds, refused.status.usage.window) == (3.0, "60d")


def test_a_policy_may_lengthen_the_budget_window_and_a_spec_only_lengthen_it_further() -> None:
    from controller.engine.policy import effective
    from tests.registry.test_policy import policy, spec

    floors = effective(spec(qpuBudgetWindow="45d"), "team", None, [policy(qpuBudgetWindow="90d")])
    assert floors.spec.governance.qpu_budget_window == "90d"
    assert [s.describe() for s in floors.sources] == ["governance.qpuBudgetWindow: 90d (QuantumPolicy floor)"]
    longer = spec(qpuBudgetWindow="120d")
    assert effective(longer, "team", None, [policy(qpuBudgetWindow="90d")]).spec == longer
    assert effective(spec(), "team", None, [policy(qpuBudgetWindow="7d")]).sources == ()  # 30 days already
    with pytest.raises(ValueError, match="1d to 366d"):
        spec(qpuBudgetWindow="400d")


def test_a_stopped_trainings_spending_is_recorded_at_once_and_counted_once_when_it_resumes(
    repos: Repos, tmp_path: Path
) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, ibm_spec(7, 10), "tiny on IBM")
    with installed(seconds_per_job=1.5) as factory, pytest.raises(TrainingStopped):
        reconcile(work, tmp_path, should_stop=lambda: factory.calls >= 2)  # Ctrl-C after two jobs
    [stopped] = entries(work)
    assert stopped["kind"] == "stopped" and stopped["data"]["usage"]["qpuSeconds"] == 3.0
    assert stopped["data"]["usage"]["primitiveJobs"] == 2.0
    assert "stopped" in repos.remote_log("-1", "--format=%s")  # pushed: the spending is not lost with the machine
    assert Ledger(tuple(entry_from_json(e, 1) for e in entries(work))).qpu_seconds(datetime.now(UTC)) == 3.0
    with installed(seconds_per_job=1.5) as factory:
        resumed = reconcile(work, tmp_path)  # 3 s spent + the whole training's 8.3 s estimate would not fit
    assert [e["kind"] for e in entries(work)][:2] == ["stopped", "registered"], entries(work)
    total = entries(work)[1]["data"]["usage"]["qpuSeconds"]
    assert total == 1.5 * (factory.calls + 2)  # the version's usage covers every job, before and after the stop
    assert resumed.status.usage.qpu_seconds == total  # the two jobs before the stop are counted once


def test_a_training_stopped_twice_counts_each_second_once() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    ledger = Ledger()
    for kind, key, seconds in (
        ("stopped", "k1", 3.0),  # cumulative over the training's resumes, as its checkpoint keeps it
        ("stopped", "k1", 5.0),
        ("evaluated", None, 1.0),
        ("registered", "k1", 7.0),
    ):
        data: dict[str, Any] = {"usage": {"qpuSeconds": seconds}, "trainingKey": key}
        entry = draft(ledger.last, at="2026-01-01T00:00:00Z", kind=kind, model="demo/tiny", version=None,
                      message=kind, data=data)  # fmt: skip
        ledger = Ledger((*ledger.entries, entry))
        if kind == "stopped":  # the training about to resume counts its own spending from its checkpoint
            assert ledger.qpu_seconds(now, resuming="k1") == 0.0
    assert ledger.qpu_seconds(now) == 8.0
    assert ledger.qpu_seconds(now, resuming="k1") == 8.0  # it ended: nothing of it is pending


def test_a_training_stopped_elsewhere_is_recorded_once_however_often_it_is_told(repos: Repos, tmp_path: Path) -> None:
    """``record_stopped`` (the operator's Jobs: what a stopped Job's checkpoint journal says it spent):
    told again (an operator restarted before the Job's ConfigMap went) it records nothing; told more
    (the Job ran on) it records the new total, and the budget counts each second once."""
    work = repos.clone("work")
    repos.commit_file(work, SPEC, ibm_spec(7, 100), "tiny on IBM")
    registry = Registry(work)
    rec = Reconciler(registry, checkpoint_root=tmp_path / "ckpt")
    registry.sync()
    [(observed, _)] = observe(registry.git, work / "specs").models
    due = Due("the spec changed", "0123456789abcdef", "sha256:spec", "sha256:data")
    spent = {"qpuSeconds": 3.0, "primitiveJobs": 2.0, "shots": 128.0}
    assert [d.kind for d in rec.record_stopped(observed, [(due, spent)])] == ["stopped"]
    assert rec.record_stopped(observed, [(due, spent)]) == []
    assert rec.record_stopped(observed, [(due, {**spent, "qpuSeconds": 4.5, "primitiveJobs": 3.0})]) != []
    assert [e["kind"] for e in entries(work)] == ["stopped", "stopped"]
    assert entries(work)[0]["data"]["trainingKey"] == "0123456789abcdef"
    assert "stopped" in repos.remote_log("-1", "--format=%s")  # pushed
    assert Ledger(tuple(entry_from_json(e, 1) for e in entries(work))).qpu_seconds(datetime.now(UTC)) == 4.5
