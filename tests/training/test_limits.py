"""The trainer keeps the limits too, with the real figures: training.timeout stops a training before its
next job (checkpointed, a failure of its own kind), the machine's limits and the QPU budget are checked
on the samples the data really has before any job, and the dataset reader stops at its bound."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.api import limits
from controller.engine import training
from controller.engine.training import backends, checkpoint, circuits, data
from tests.training.conftest import Calls
from tests.training.specs import QASM_ANSATZ, optimizer, spec, tiny
from tests.training.standin import credentials_source, installed

Spy = Callable[[Any, str], Calls]


class Clock:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


# --- training.timeout ---------------------------------------------------------------------------------------


def test_a_training_stops_at_its_timeout_checkpointed_and_resumes_when_given_more_time(
    spy: Spy, tmp_path: Path
) -> None:
    folder = tmp_path / "ckpt"
    short = spec(training={**optimizer("COBYLA", 6), "timeout": "1h"})
    with pytest.raises(training.TrainingTimedOut) as raised:
        # each job reads the clock three times: 2,000 s a job, and 1,000 s more by the next check
        training.train(short, checkpoint_dir=folder, clock=Clock(1000.0))
    assert isinstance(raised.value, training.TrainingError)  # a failure, unlike TrainingStopped
    assert str(raised.value) == (
        "training.timeout: the training has run 1h23m, its timeout is 1h; stopped before iteration 3 of 6, "
        "the checkpoint after iteration 2 is kept; raise training.timeout or lower "
        "training.optimizer.maxIterations to train again"
    )
    kept = checkpoint.summary(folder)
    assert kept is not None and kept["iteration"] == 2

    runs = spy(backends.StatevectorTarget, "run")
    longer = spec(training={**optimizer("COBYLA", 6), "timeout": "10h"})
    artifact = training.train(longer, checkpoint_dir=folder)
    usage = artifact.manifest["usage"]
    assert usage["resumes"] == 1
    assert len(runs) == usage["primitiveJobs"] - 2, "the two journaled jobs were paid for again"
    assert training.spec_digest(short) == training.spec_digest(longer)  # the timeout is not what is trained


def test_a_restart_does_not_reset_the_clock(spy: Spy, tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    seen: list[training.Progress] = []
    first = spec(training=optimizer("COBYLA", 6))
    with pytest.raises(training.TrainingStopped):
        training.train(
            first,
            checkpoint_dir=folder,
            clock=Clock(1000.0),
            on_progress=seen.append,
            should_stop=lambda: len(seen) >= 2,
        )
    assert seen[-1].wall_seconds == 4000.0  # journaled: two jobs of 2,000 s
    runs = spy(backends.StatevectorTarget, "run")
    with pytest.raises(training.TrainingTimedOut, match="stopped before iteration 3 of 6"):
        training.train(spec(training={**optimizer("COBYLA", 6), "timeout": "1h"}), checkpoint_dir=folder)
    assert runs == []


def test_the_test_splits_job_is_never_cut_off(spy: Spy) -> None:
    """The timeout is checked before each training job; the job that scores the test split and ends the
    training always runs, so a training never times out at its very end."""
    runs = spy(backends.StatevectorTarget, "run")
    # 2 jobs of 2,000 s each reach 1h 7m by the time the test job starts: it runs anyway
    artifact = training.train(spec(training={**optimizer("COBYLA", 2), "timeout": "1h"}), clock=Clock(1000.0))
    assert len(runs) == 3 and artifact.manifest["usage"]["iterations"] == 2


# --- the machine's limits, before any work ------------------------------------------------------------------------


def test_too_many_qubits_for_the_simulator_are_refused_before_anything_is_built(spy: Spy) -> None:
    built = spy(circuits, "build")
    with pytest.raises(training.LimitExceeded) as raised:
        training.train(spec(circuit={"qubits": 26}))
    assert str(raised.value).startswith("circuit.qubits: 26 qubits need 4.0 GiB on local:statevector")
    assert built == []


def test_a_fake_device_too_small_for_the_circuit_is_refused(tiny_repo: Path) -> None:
    with pytest.raises(
        training.LimitExceeded, match=r"^circuit.qubits: fake:manila has 5 qubits; circuit.qubits is 6$"
    ):
        training.train(tiny(circuit={"qubits": 6}, training={"backend": "fake:manila"}), repo_root=tiny_repo)


def test_an_ibm_device_too_small_for_the_circuit_is_refused_once_connected(tiny_repo: Path) -> None:
    s = tiny(
        circuit={"qubits": 6}, training={"backend": "ibm:fake_lima", "executionMode": "job", "credentialsSecret": "ibm"}
    )
    assert limits.qubit_problem(s.training.backend, 6) is None  # not known offline
    read, _ = credentials_source()
    with installed() as factory, pytest.raises(training.CircuitError) as raised:
        training.train(s, repo_root=tiny_repo, credentials=read)
    assert str(raised.value) == "circuit.qubits: ibm:fake_lima (fake_lima) has 5 qubits; circuit.qubits is 6"
    assert factory.calls == 0


def test_the_whole_trainings_shots_are_bounded_before_the_first_job(spy: Spy) -> None:
    runs = spy(backends.AerTarget, "run")
    huge = spec(training={"backend": "local:aer", "shots": 10_000_000, **optimizer("COBYLA", 100_000)})
    with pytest.raises(training.LimitExceeded) as raised:
        training.train(huge)
    # iris species 0 and 1 at testFraction 0.5: 50 training and 50 test samples
    assert str(raised.value) == (
        "training: the training would take 50,000,500,000,000 shots (100,000 points in 100,000 iterations x 50 "
        "training samples + 50 test samples) x 10,000,000 shots, over the 10,000,000,000 one training may take: "
        "lower training.optimizer.maxIterations or training.shots"
    )
    assert runs == []


def test_the_qpu_estimate_is_checked_on_the_real_samples(tiny_repo: Path) -> None:
    """Validation counts a file dataset's fewest samples; the trainer counts its real ones (8 and 8)."""
    s = tiny(
        training={
            "backend": "ibm:fake_lima",
            "executionMode": "job",
            "credentialsSecret": "ibm",
            **optimizer("COBYLA", 4),
        },
        governance={"qpuBudgetSeconds": 0.5},
    )
    assert limits.qpu_estimate_problem(s) is None  # (4 x 2 + 2) x 64 shots x 250 µs = 0.16 s
    read, _ = credentials_source()
    with installed(seconds_per_job=0.01) as factory, pytest.raises(training.BudgetExceeded) as raised:
        training.train(s, repo_root=tiny_repo, credentials=read, budget_used_seconds=0.1)
    assert str(raised.value) == (
        "governance.qpuBudgetSeconds: 0.5 s per 30 days; 0.1 s used before; the training is estimated at 0.6 s of "
        "QPU time: 2,560 shots (4 points in 4 iterations x 8 training samples + 8 test samples) x 64 shots at "
        "250 µs a shot; no job was started"
    )
    assert factory.calls == 0


OPTIMIZERS = [
    ("COBYLA", {}),
    ("NelderMead", {}),
    ("SPSA", {}),
    ("SPSA", {"learningRate": 0.2}),
    ("Adam", {}),
    ("L_BFGS_B", {}),
]


@pytest.mark.parametrize(("kind", "extra"), OPTIMIZERS, ids=[f"{k}{'-lr' if e else ''}" for k, e in OPTIMIZERS])
def test_the_estimate_bounds_what_a_training_really_takes(kind: str, extra: dict[str, Any]) -> None:
    s = spec(training={"backend": "local:aer", **optimizer(kind, 3, **extra)})
    usage = training.train(s).manifest["usage"]
    plan = limits.estimate(s)
    assert plan.samples == limits.Samples(50, 50, True)
    assert usage["shots"] <= plan.total_shots
    if kind in ("SPSA", "Adam"):  # they run every iteration they are given: the estimate is exact
        assert usage["shots"] == plan.total_shots


def test_the_builtin_datasets_rows_are_the_ones_loaded() -> None:
    for name, counts in limits.BUILTIN_CLASS_ROWS.items():
        table = data.load(spec(dataset={"source": f"builtin:{name}", "features": None}).dataset, None, 2)
        assert {label: table.y.count(label) for label in set(table.y)} == counts, name
    dataset = spec(dataset={"source": "builtin:wine", "features": None, "classes": [0, 2], "testFraction": 0.3}).dataset
    real = data.split(dataset, data.load(dataset, None, 2))
    assert limits.samples(dataset) == limits.Samples(len(real.y_train), len(real.y_test), True)


@pytest.mark.parametrize(
    "circuit",
    [
        {"qubits": 3, "ansatz": {"kind": "RealAmplitudes", "reps": 2}},
        {"qubits": 3, "ansatz": {"kind": "EfficientSU2", "reps": 1}},
        {"qubits": 2, "ansatz": {"kind": "QASM", "qasm": QASM_ANSATZ}},
    ],
    ids=["RealAmplitudes", "EfficientSU2", "QASM"],
)
def test_the_weight_count_is_the_ansatzs(circuit: dict[str, Any]) -> None:
    s = spec(circuit=circuit)
    assert limits.weight_count(s) == len(circuits.build(s, 2, 2).weights)


def test_aer_holds_its_parallel_samples_within_the_memory_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(limits.MEMORY_LIMIT_ENV, "1536Mi")
    target = backends.AerTarget("local:aer")
    assert target._estimator.options.backend_options["max_memory_mb"] == 1536


# --- the dataset reader ------------------------------------------------------------------------------------------

PEAK = """
import json, resource, sys
from pathlib import Path
from controller.engine.training import data
from controller.engine.training.errors import DatasetError
from tests.training.specs import tiny
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    data.load(tiny(dataset={"target": "label", "classes": None}).dataset, Path(sys.argv[1]), 2)
    message = None
except DatasetError as err:
    message = str(err)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"message": message, "grew_mb": (after - before) / 1024}))
"""


def test_two_million_rows_are_refused_early_and_small(tmp_path: Path) -> None:
    """An 8 MB CSV of 2 million rows took 14 s and 843 MB on every plan; it is refused at the bound."""
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "iris01.csv").write_text("x,label\n" + "1,0\n2,1\n" * 1_000_000)
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(repo)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    found = json.loads(done.stdout)
    assert found["message"] == "dataset.source: file:data/iris01.csv has more than 100,000 data rows, the limit"
    assert found["grew_mb"] < 200, found


def test_a_field_over_the_csv_readers_own_limit_is_a_dataset_error(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "iris01.csv").write_text("x,label\n" + "9" * 200_000 + ",1\n1,0\n")
    with pytest.raises(training.DatasetError) as raised:
        data.load(tiny(dataset={"target": "label"}).dataset, repo, 2)
    assert str(raised.value) == (
        "dataset.source: file:data/iris01.csv is not a readable CSV file (field larger than field limit (131072))"
    )
