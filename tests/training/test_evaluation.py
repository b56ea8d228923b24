"""Scoring a trained model on any backend: exact, shot noise, a device's noise, IBM through the factory."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from controller.engine.training import BudgetExceeded, ModelArtifact, score, train
from controller.engine.training.evaluation import evaluate
from tests.training.specs import optimizer, spec, tiny
from tests.training.standin import credentials_source, installed


@functools.cache
def trained() -> ModelArtifact:
    """One tiny model trained on the exact simulator (iris 0/1, 2 qubits), shared by these tests."""
    return train(spec(training=optimizer("COBYLA", 6)))


def test_on_the_exact_simulator_it_agrees_with_score() -> None:
    model = trained()
    result = evaluate(model, spec(), "local:statevector")
    assert result.metrics == score(model, spec())
    assert result.device == "statevector" and result.rows == 50
    assert result.calibration is None
    assert result.usage == {"qpuSeconds": 0.0, "primitiveJobs": 1.0, "shots": 0.0}


def test_on_a_fake_device_the_circuit_runs_under_its_noise_and_names_its_calibration() -> None:
    model = trained()
    noisy = evaluate(model, spec(), "fake:manila", shots=256)
    assert noisy.device == "fake_manila"
    assert noisy.calibration is not None and noisy.calibration.startswith("20")
    assert noisy.shots == 256 and noisy.usage["shots"] == 256 * 50
    exact = evaluate(model, spec(), "local:statevector")
    assert noisy.metrics["loss"] != exact.metrics["loss"]  # sampled and noisy, not the exact figures
    assert 0.0 <= noisy.metrics["accuracy"] <= 1.0


def test_aer_lifts_feature_angles_and_keeps_the_exact_predictions_at_many_shots() -> None:
    model = trained()
    aer = evaluate(model, spec(), "local:aer", shots=100_000)
    exact = evaluate(model, spec(), "local:statevector")
    assert aer.device == "aer_simulator"
    assert abs(aer.metrics["accuracy"] - exact.metrics["accuracy"]) <= 0.04


def test_an_ibm_backend_goes_through_the_runtime_factory_and_counts_its_seconds(tiny_repo: Path) -> None:
    on_csv = tiny(training=optimizer("COBYLA", 2))
    model = train(on_csv, repo_root=tiny_repo)
    read, calls = credentials_source()
    with installed(seconds_per_job=1.5) as factory:
        result = evaluate(model, on_csv, "ibm:fake_manila", shots=64, repo_root=tiny_repo, credentials=read)
    assert factory.calls == 1 and len(factory.services) == 1 and calls == [1]
    assert factory.sessions == [] and factory.batches == []  # one job: no session is opened for it
    assert result.device == "fake_manila" and result.usage["qpuSeconds"] == 1.5


def test_the_models_shot_and_budget_limits_hold() -> None:
    model = trained()
    limited = spec(governance={"maxShots": 100})
    with pytest.raises(BudgetExceeded, match=r"governance\.maxShots: evaluating with 256 shots exceeds 100"):
        evaluate(model, limited, "fake:manila", shots=256)
    budget = spec(governance={"qpuBudgetSeconds": 10})
    with pytest.raises(BudgetExceeded, match=r"10\.0 of 10\.0 QPU seconds are spent"):
        evaluate(model, budget, "ibm:fake_manila", budget_used_seconds=10.0)
