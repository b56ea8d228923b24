"""The VQC comparison benchmark still runs: its functions on a 2-qubit problem at the least COBYLA
budget. Figures are printed by the benchmark, never asserted here (wall-clock belongs to the benchmark)."""

from __future__ import annotations

import math

import pytest

from benchmarks import train_vs_vqc as bench

pytestmark = pytest.mark.slow


def test_the_benchmark_runs_both_trainers_on_the_same_problem() -> None:
    problem = bench.Problem(
        "moons",
        "moons, 2 qubits",
        {"source": "builtin:moons", "testFraction": 0.2, "seed": 42},
        qubits=2,
        evaluations=bench.least_evaluations(2),
        shots=256,
    )
    comparison = bench.compare(problem)
    assert (comparison.train_rows, comparison.test_rows) == (160, 40)
    for result in (comparison.vqc, comparison.qmlops):
        assert result.evaluations == problem.evaluations
        assert 0.0 <= result.accuracy <= 1.0
        assert result.seconds > 0
    assert comparison.qmlops.jobs_per_evaluation == 1.0
    assert comparison.qmlops.jobs == problem.evaluations + 1
    assert comparison.vqc.jobs >= comparison.vqc.training_jobs >= problem.evaluations
    assert math.isfinite(comparison.qmlops.overhead)
    text = bench.format_comparison(comparison)
    assert "qiskit-ml VQC" in text and "qmlops (local:aer)" in text and "speed-up" in text
    assert set(comparison.targets()) == {
        "speed-up >= 10x",
        "accuracy >= VQC's",
        "1 job per evaluation",
        "overhead per iteration <= 20%",
    }


def test_the_full_problems_are_the_ones_stated() -> None:
    iris, cancer = bench.problems()
    assert (iris.qubits, iris.evaluations, iris.shots) == (4, 150, 1024)
    assert (cancer.qubits, cancer.evaluations) == (8, 150)
    assert cancer.spec().dataset.reduce.components == 8
    quick = bench.problems(bench.QUICK_EVALUATIONS)
    assert [p.evaluations for p in quick] == [14, 26]
