"""A budget that counts everything: the QPU seconds and shots of a training that failed are kept in its
``failed`` ledger entry and count against governance.qpuBudgetSeconds, as evaluations a pipeline
recorded do (issue 12). Real reconciles on a real repository; IBM is the offline stand-in."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

from controller.engine.reconcile import Reconciler
from controller.engine.registry import Registry
from controller.engine.registry.ledger import Ledger, draft
from controller.engine.training import Credentials
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


def reconcile(work: Path, tmp: Path) -> Any:
    registry = Registry(work)
    rec = Reconciler(
        registry,
        checkpoint_root=tmp / "ckpt",
        credentials=lambda namespace, name: Credentials(token="tok-0123456789", instance="crn:standin"),
    )
    registry.sync()
    [(observed, _)] = observe(registry.git, work / "specs").models
    return rec.reconcile(observed)


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
