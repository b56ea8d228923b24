"""The fast trainer: one primitive job per objective evaluation, SPSA iteration or gradient; exact
parameter-shift gradients; five optimizers that lower the loss; a seed that fixes the weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from controller.api.quantummodel import QuantumModelSpec
from controller.engine import training
from controller.engine.training import backends, circuits, data
from controller.engine.training.checkpoint import Checkpoint
from controller.engine.training.objective import Objective
from tests.training.conftest import Calls
from tests.training.specs import QASM_ANSATZ, optimizer, spec

Spy = Callable[[Any, str], Calls]

# points in one job: the optimizers' own batches, as a leading axis of one PUB
POINTS = {"COBYLA": {1}, "NelderMead": {1}, "SPSA": {3, 11}, "L_BFGS_B": {9}, "Adam": {9}}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["COBYLA", "SPSA", "NelderMead", "L_BFGS_B", "Adam"])
def test_each_optimizer_lowers_the_loss_one_job_per_iteration(kind: str, spy: Spy) -> None:
    runs = spy(backends.StatevectorTarget, "run")
    seen: list[training.Progress] = []
    iterations = 6
    s = spec(
        dataset={"testFraction": 0.7},
        training=optimizer(kind, iterations, learningRate=0.2 if kind == "Adam" else None),
    )
    artifact = training.train(s, on_progress=seen.append)

    usage = artifact.manifest["usage"]
    assert [p.iteration for p in seen] == list(range(1, iterations + 1))
    assert [p.jobs for p in seen] == list(range(1, iterations + 1))  # one job per iteration, nothing else
    assert len(runs) == usage["primitiveJobs"] == iterations + 1  # and one for the test split
    assert usage["iterations"] == iterations
    train_rows = artifact.manifest["lineage"]["dataset"]["trainRows"]
    values = [call[3] for call in runs]  # (self, isa, observables, values, shots, seed)
    assert {v.shape[0] for v in values[:-1]} <= POINTS[kind]
    assert all(v.shape[1] == train_rows for v in values[:-1])
    assert values[-1].shape[0] == artifact.manifest["lineage"]["dataset"]["testRows"]

    curve = artifact.manifest["lossCurve"]
    assert len(curve) == iterations
    assert [p.loss for p in seen] == curve
    assert min(curve) < curve[0]
    assert kind in ("COBYLA", "NelderMead") or curve[-1] < curve[0]  # the direct searches probe uphill too


def objective_for(s: QuantumModelSpec) -> Objective:
    prepared = data.prepare(s.dataset, None, s.circuit.qubits, s.circuit.feature_map.kind.value)
    model = circuits.build(s, prepared.x_train.shape[1], len(prepared.classes))
    target = backends.open_target(s)
    isa = target.transpile(model.circuit, 1)
    observables = target.layout_observables(isa, model.observables)
    x, y = prepared.x_train, prepared.split.y_train
    return Objective(s, model, target, isa, observables, x, y, Checkpoint.open(None, "test"))


CP_ANSATZ = QASM_ANSATZ.replace("rz(w_c) q[1];", "rz(w_c) q[1];\ncp(w_d) q[0], q[1];\nrx(w_e) q[0];").replace(
    "input float w_c;", "input float w_c;\ninput float w_d;\ninput float w_e;"
)


@pytest.mark.parametrize(
    ("circuit", "classes"),
    [
        ({}, [0, 1]),
        ({"featureMap": {"kind": "ZZFeatureMap"}, "ansatz": {"kind": "EfficientSU2", "reps": 1}}, [0, 1]),
        ({"ansatz": {"kind": "QASM", "qasm": CP_ANSATZ}, "observable": "XZ"}, [0, 1]),
        ({"qubits": 3}, [0, 1, 2]),
    ],
    ids=["real-amplitudes", "efficient-su2", "qasm-cp", "three-classes"],
)
def test_parameter_shift_gradient_matches_finite_differences(circuit: dict[str, Any], classes: list[int]) -> None:
    s = spec(
        dataset={"classes": classes, "testFraction": 0.8},
        circuit=circuit,
        training=optimizer("L_BFGS_B", 1000),
    )
    objective = objective_for(s)
    weights = np.random.default_rng(5).uniform(-np.pi, np.pi, len(objective.model.weights))
    loss, gradient = objective.loss_and_gradient(weights)
    assert loss == pytest.approx(objective.loss(weights), abs=1e-12)
    h = 1e-5
    steps = np.eye(len(weights)) * h
    differences = (objective.losses(weights + steps) - objective.losses(weights - steps)) / (2 * h)
    assert np.allclose(gradient, differences, atol=1e-6), (gradient, differences)
    assert np.abs(gradient).max() > 1e-3  # not trivially zero


def test_controlled_rotation_gradients_would_be_wrong() -> None:
    """Why crx/cry/crz are refused for L_BFGS_B and Adam: the two-term shift misses their half frequency."""
    program = (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float w_a;\ninput float w_b;\ninput float w_c;\ninput float w_d;\n'
        "qubit[2] q;\nry(w_a) q[0];\ncrx(w_b) q[0], q[1];\nry(w_c) q[0];\nry(w_d) q[1];\n"
    )
    s = spec(
        dataset={"testFraction": 0.8},
        circuit={"ansatz": {"kind": "QASM", "qasm": program}},
        training=optimizer("COBYLA", 1000),
    )
    objective = objective_for(s)
    with pytest.raises(training.CircuitError, match="found crx"):
        circuits.check_shift_rule(objective.model)
    weights = np.array([0.3, -0.7, 1.1, 0.4])
    _, gradient = objective.loss_and_gradient(weights)
    h = 1e-5
    steps = np.eye(4) * h
    differences = (objective.losses(weights + steps) - objective.losses(weights - steps)) / (2 * h)
    position = objective.model.weights.index("w_b")
    assert not np.isclose(gradient[position], differences[position], atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["SPSA", "L_BFGS_B"])
def test_same_seed_same_weights(kind: str) -> None:
    s = spec(dataset={"testFraction": 0.7}, training=optimizer(kind, 4))
    first, second = training.train(s), training.train(s)
    assert first.weights == second.weights
    assert first.manifest["lossCurve"] == second.manifest["lossCurve"]
    assert first.metrics == second.metrics
    other = training.train(spec(dataset={"testFraction": 0.7}, training={**optimizer(kind, 4), "seed": 8}))
    assert other.weights != first.weights
