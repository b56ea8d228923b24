"""What a training costs, in the artifact and in each progress report; governance.maxShots and
qpuBudgetSeconds stop the training before the job that would break them."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.engine import training
from controller.engine.training import backends
from tests.training.conftest import Calls
from tests.training.specs import optimizer, spec, tiny
from tests.training.standin import credentials_source, installed

pytestmark = pytest.mark.slow

Spy = Callable[[Any, str], Calls]


def test_usage_recorded_in_the_artifact_and_the_progress(spy: Spy) -> None:
    runs = spy(backends.AerTarget, "run")
    seen: list[training.Progress] = []
    artifact = training.train(spec(training={"backend": "local:aer", **optimizer("SPSA", 3)}), on_progress=seen.append)
    usage = artifact.manifest["usage"]
    # (self, isa, observables, values, shots, seed): every binding of every job is sampled 64 times
    shots = [call[4] * math.prod(call[3].shape[:-1]) for call in runs]
    assert usage["primitiveJobs"] == len(runs) == 4
    assert usage["shots"] == sum(shots)
    assert [p.shots for p in seen] == [sum(shots[:n]) for n in (1, 2, 3)]
    assert [p.jobs for p in seen] == [1, 2, 3]
    assert usage["iterations"] == 3 and usage["resumes"] == 0
    assert usage["qpuSeconds"] == 0.0  # a simulator
    assert usage["wallSeconds"] >= usage["runSeconds"] > 0
    assert all(p.wall_seconds > 0 and p.backend == "local:aer" for p in seen)
    assert artifact.manifest["lineage"]["shots"] == 64


def test_statevector_takes_no_shots() -> None:
    usage = training.train(spec(training=optimizer("COBYLA", 2))).manifest["usage"]
    assert (usage["primitiveJobs"], usage["shots"]) == (3, 0)


def ibm(tiny_repo: Path, budget: float | None, iterations: int = 4) -> dict[str, Any]:
    s = tiny(
        training={
            "backend": "ibm:fake_lima",
            "executionMode": "job",
            "credentialsSecret": "ibm",
            **optimizer("COBYLA", iterations),
        },
        governance={"qpuBudgetSeconds": budget},
    )
    read, _ = credentials_source()
    return {"spec": s, "repo_root": tiny_repo, "credentials": read}


def test_qpu_seconds_as_runtime_reports_them(tiny_repo: Path) -> None:
    seen: list[training.Progress] = []
    with installed(seconds_per_job=1.5):
        artifact = training.train(**ibm(tiny_repo, None, iterations=2), on_progress=seen.append)
    assert [p.qpu_seconds for p in seen] == [1.5, 3.0]
    assert artifact.manifest["usage"]["qpuSeconds"] == 4.5  # with the test split's job


def test_qpu_budget_stops_before_the_job_that_would_break_it(tiny_repo: Path, tmp_path: Path) -> None:
    with (
        installed(seconds_per_job=1.5) as factory,
        pytest.raises(training.BudgetExceeded) as raised,
    ):
        training.train(**ibm(tiny_repo, 4.0), checkpoint_dir=tmp_path / "ckpt")
    # 1.5 s spent; a second job of about 1.5 s and the test split's after it would make 4.5 > 4
    assert factory.calls == 1
    assert str(raised.value) == (
        "governance.qpuBudgetSeconds: 4 s per 30 days; 0.0 s used before and 1.5 s by this training, "
        "the next job needs about 1.5 s and as much again for the test split after it; stopped before iteration 2"
    )

    # what earlier trainings used in the last 30 days counts too
    with installed(seconds_per_job=1.5) as factory, pytest.raises(training.BudgetExceeded):
        training.train(**ibm(tiny_repo, 6.5), budget_used_seconds=2.0)
    assert factory.calls == 2  # 2 + 1.5 + (1.5 + 1.5) = 6.5 is within the budget; then nothing is left


def test_the_test_split_job_always_has_room(tiny_repo: Path) -> None:
    """A budget that admits the training jobs admits the test split's job after them: no training
    fails at its very end for want of budget."""
    with installed(seconds_per_job=1.5) as factory:
        artifact = training.train(**ibm(tiny_repo, 4.5, iterations=2))
    assert factory.calls == 3 and artifact.manifest["usage"]["qpuSeconds"] == 4.5


@pytest.mark.parametrize(("budget", "used"), [(0.0, 0.0), (10.0, 10.0), (10.0, 12.0)])
def test_no_job_when_the_qpu_budget_is_spent(budget: float, used: float, tiny_repo: Path) -> None:
    with (
        installed(seconds_per_job=1.5) as factory,
        pytest.raises(training.BudgetExceeded) as raised,
    ):
        training.train(**ibm(tiny_repo, budget), budget_used_seconds=used)
    assert factory.calls == 0
    assert str(raised.value).startswith(
        f"governance.qpuBudgetSeconds: {budget:g} s per 30 days; {used:.1f} s used before"
    )


def test_the_qpu_budget_does_not_apply_to_simulators(tiny_repo: Path) -> None:
    s = tiny(
        training={"backend": "fake:lima", "executionMode": "job", **optimizer("COBYLA", 1)},
        governance={"qpuBudgetSeconds": 0},
    )
    with installed(seconds_per_job=1.5) as factory:
        training.train(s, repo_root=tiny_repo)
    assert factory.calls == 2


def test_max_shots_stops_before_any_job(spy: Spy) -> None:
    runs = spy(backends.AerTarget, "run")
    for enforcement in ("enforce", "audit"):  # admission refuses it under enforce (CEL); audit admits it
        s = spec(training={"backend": "local:aer"}, governance={"enforcement": enforcement, "maxShots": 32})
        with pytest.raises(training.BudgetExceeded) as raised:
            training.train(s)
        assert str(raised.value) == "governance.maxShots: training.shots 64 exceeds 32"
    assert runs == []
    training.train(spec(training={"backend": "local:aer", **optimizer("COBYLA", 1)}, governance={"maxShots": 64}))
    assert len(runs) == 2
