"""The model circuit from the spec: feature map, library or OpenQASM 3 ansatz, parity, Pauli and
multi-class readout; transpiled once per backend, every job on the same ISA circuit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from controller.engine import training
from controller.engine.training import backends, circuits
from tests.training.conftest import Calls
from tests.training.specs import QASM_ANSATZ, optimizer, spec

Spy = Callable[[Any, str], Calls]


@pytest.mark.parametrize("feature_map", ["ZFeatureMap", "ZZFeatureMap", "PauliFeatureMap"])
@pytest.mark.parametrize(("ansatz", "weights"), [("RealAmplitudes", 6), ("EfficientSU2", 12)])
def test_feature_map_and_ansatz_from_the_spec(feature_map: str, ansatz: str, weights: int) -> None:
    s = spec(circuit={"featureMap": {"kind": feature_map, "reps": 2}, "ansatz": {"kind": ansatz, "reps": 2}})
    model = circuits.build(s, n_features=2, n_classes=2)
    assert model.circuit.num_qubits == 2
    assert model.features == ["x_0", "x_1"]
    assert sorted(model.weights) == sorted(f"theta_{i}" for i in range(weights))  # (reps + 1) layers per qubit
    assert sorted(p.name for p in model.circuit.parameters) == sorted(model.features + model.weights)
    assert model.observables == ["ZZ"] and model.readout == "parity"
    assert model.circuit.data[0].operation.name == "h"  # the feature map comes first


def test_openqasm3_ansatz_keeps_its_parameter_names() -> None:
    s = spec(circuit={"ansatz": {"kind": "QASM", "qasm": QASM_ANSATZ}})
    model = circuits.build(s, 2, 2)
    assert sorted(model.weights) == ["w_a", "w_b", "w_c"]
    assert {i.operation.name for i in model.circuit.data} >= {"ry", "cx", "rz"}
    circuits.check_shift_rule(model)  # one rotation per weight, linear: gradients allowed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("input float x_0;\nqubit[2] q;\nry(x_0) q[0];\n", "circuit.ansatz.qasm: parameter 'x_0'"),
        ("input float w;\nqubit[3] q;\nry(w) q[0];\n", "ansatz.qasm: the program uses 3 qubits, circuit.qubits is 2"),
        ("input float w;\nqubit[2] q;\nbit[1] c;\nry(w) q[0];\nc[0] = measure q[0];\n", "an ansatz is unitary"),
        ('include "/etc/passwd";\nqubit[2] q;\n', "include '/etc/passwd' is not allowed"),
    ],
)
def test_bad_openqasm3_ansatz(body: str, message: str) -> None:
    program = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n' + body
    with pytest.raises(
        (ValueError, training.CircuitError), match=message
    ):  # the spec refuses most, the engine the rest
        s = spec(circuit={"ansatz": {"kind": "QASM", "qasm": program}})
        circuits.build(s, 2, 2)


@pytest.mark.parametrize(
    ("gates", "found"),
    [
        ("ry(w) q[0];\nry(w) q[1];\n", "'w' is in 2"),
        ("ry(2*w) q[0];\n", "found ry(2*w)"),
        ("crx(w) q[0], q[1];\n", "found crx(w)"),  # two-term shift rule is wrong for controlled rotations
        ("rx(w*w) q[0];\n", "found rx(w*w)"),
    ],
)
def test_gradient_optimizers_need_shift_rule_gates(gates: str, found: str) -> None:
    program = f'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float w;\nqubit[2] q;\n{gates}'
    s = spec(circuit={"ansatz": {"kind": "QASM", "qasm": program}}, training=optimizer("L_BFGS_B", 2))
    with pytest.raises(training.CircuitError, match=r"^training.optimizer.kind: parameter-shift") as raised:
        training.train(s)
    assert found in str(raised.value)
    assert "use COBYLA, SPSA or NelderMead" in str(raised.value)
    training.train(spec(circuit=s.circuit.model_dump(by_alias=True), training=optimizer("COBYLA", 1)))


def test_readouts() -> None:
    assert circuits.build(spec(), 2, 2).observables == ["ZZ"]
    assert circuits.build(spec(circuit={"observable": "ZI"}), 2, 2).observables == ["ZI"]
    three = spec(circuit={"qubits": 3})
    model = circuits.build(three, 2, 3)
    assert model.observables == ["IIZ", "IZI", "ZII"] and model.readout == "class-z"  # class k reads Z on qubit k
    with pytest.raises(training.CircuitError, match=r"^circuit.qubits: 3 classes are read from one qubit each"):
        circuits.build(spec(), 2, 3)
    with pytest.raises(training.CircuitError, match=r"^circuit.qubits: 3 features need at least 3 qubits"):
        circuits.build(spec(), 3, 2)


@pytest.mark.slow
def test_pauli_readout_trains_and_predicts() -> None:
    artifact = training.train(spec(circuit={"observable": "ZI"}, training=optimizer("COBYLA", 4)))
    assert artifact.observables() == ["ZI"]
    assert artifact.manifest["circuit"]["readout"] == "parity"


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local:statevector", "local:aer"])
def test_multi_class_readout_trains(backend: str) -> None:
    s = spec(
        dataset={
            "classes": [0, 1, 2],
            "features": ["sepal_length", "petal_length", "petal_width"],
            "testFraction": 0.4,
        },
        circuit={"qubits": 3},
        training={"backend": backend, **optimizer("COBYLA", 6)},
    )
    artifact = training.train(s)
    assert artifact.classes == [0, 1, 2]
    assert artifact.observables() == ["IIZ", "IZI", "ZII"]
    matrix = np.asarray(artifact.metrics["confusionMatrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 60
    assert artifact.metrics["accuracy"] == pytest.approx(np.trace(matrix) / 60)
    curve = artifact.manifest["lossCurve"]
    assert min(curve) < curve[0]


@pytest.mark.slow
def test_aer_transpiles_once_and_every_job_runs_the_same_isa_circuit(spy: Spy) -> None:
    transpiled = spy(backends.AerTarget, "transpile")
    runs = spy(backends.AerTarget, "run")
    artifact = training.train(spec(training={"backend": "local:aer", **optimizer("SPSA", 4)}))
    assert len(transpiled) == 1
    isa = runs[0][1]
    assert all(call[1] is isa for call in runs)  # (self, isa, observables, values, shots, seed)
    assert len(runs) == artifact.manifest["usage"]["primitiveJobs"] == 5
    assert set(isa.count_ops()) <= set(backends.AER_BASIS)


def _zz_model(qubits: int = 3) -> circuits.ModelCircuit:
    s = spec(
        circuit={
            "qubits": qubits,
            "featureMap": {"kind": "ZZFeatureMap", "reps": 2, "entanglement": "linear"},
            "ansatz": {"kind": "RealAmplitudes", "reps": 1},
        }
    )
    return circuits.build(s, n_features=qubits, n_classes=2)


def test_feature_angles_are_lifted_into_parameters_and_compute_the_same_states() -> None:
    from qiskit.circuit import Parameter, ParameterExpression
    from qiskit.primitives import StatevectorEstimator
    from qiskit.quantum_info import SparsePauliOp

    model = _zz_model()
    lifted, angles = circuits.lift_feature_angles(model.circuit, model.features)

    # every gate angle of the features alone is a parameter of its own; the weights are untouched
    names = {p.name for p in lifted.parameters}
    assert names == set(model.weights) | set(angles)
    assert all(name.startswith(circuits.ANGLE_PREFIX) for name in angles)
    for instruction in lifted.data:
        for param in instruction.operation.params:
            if isinstance(param, ParameterExpression):
                assert isinstance(param, Parameter), f"{instruction.operation.name}({param}) was left an expression"
    # the same expression twice (reps 2 repeats the map) is one parameter
    assert len(angles) == len({str(e) for e in angles.values()})
    assert len(angles) < sum(1 for i in model.circuit.data if i.operation.is_parameterized()) - len(model.weights)

    rng = np.random.default_rng(3)
    x, w = rng.uniform(0, 1, (6, len(model.features))), rng.uniform(-1, 1, len(model.weights))
    observable = SparsePauliOp("ZZZ")
    estimator = StatevectorEstimator()
    plain = estimator.run([(model.circuit, observable, circuits.parameter_table(model.circuit, x, w, model))])
    table = circuits.parameter_table(lifted, x, w, model, angles)
    evs = estimator.run([(lifted, observable, table)]).result()[0].data.evs
    np.testing.assert_allclose(evs, plain.result()[0].data.evs, atol=1e-12)


def test_an_angle_that_mixes_features_and_weights_is_left_alone() -> None:
    from qiskit.circuit import Parameter, QuantumCircuit

    x, theta = Parameter("x_0"), Parameter("theta_0")
    circuit = QuantumCircuit(1)
    circuit.rz(2.0 * x, 0)
    circuit.ry(x + theta, 0)
    circuit.rx(theta, 0)
    lifted, angles = circuits.lift_feature_angles(circuit, ["x_0"])
    assert list(angles) == ["x_angle_0"] and str(angles["x_angle_0"]) == str(2.0 * x)
    assert [str(i.operation.params[0]) for i in lifted.data] == ["x_angle_0", str(x + theta), "theta_0"]


def test_aer_runs_lifted_angles_and_runtime_backends_the_transpiled_circuit() -> None:
    model = _zz_model(qubits=2)
    aer, angles = backends.AerTarget("local:aer").executable(model.circuit, model.features, seed=7)
    assert angles and not {p.name for p in aer.parameters} & set(model.features)
    # Runtime's Estimator counts the parameters of gates only: a device's ISA keeps its expressions
    s = spec(training={"backend": "fake:manila", "executionMode": "job"})
    fake = backends.open_target(s, None, None)
    try:
        isa, none = fake.executable(model.circuit, model.features, seed=7)
    finally:
        fake.close()
    assert none == {} and {p.name for p in isa.parameters} >= set(model.features)
