"""The model's circuit: the spec's feature map, then its ansatz (a Qiskit circuit library function or
an OpenQASM 3 program read as data), and the readout observables.

Parameters carry OpenQASM-safe names (``x_0``, ``theta_0``) so that the QPY and the OpenQASM 3 forms
of a model bind the same weights by name. Binary models read the spec's observable (parity or a Pauli
string, Qiskit's order: the rightmost letter is qubit 0); ``k`` classes read ``Z`` on qubits 0..k-1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.api.quantummodel import AnsatzKind, Circuit, FeatureMapKind, QuantumModelSpec
from controller.engine.training.errors import CircuitError

FEATURE_PREFIX, WEIGHT_PREFIX = "x_", "theta_"
ANGLE_PREFIX = "x_angle_"  # a gate angle computed from features alone (never a weight: QASM refuses x_ names)
# Gates exp(-i w/2 G) with G of eigenvalues +-1 (up to a global phase): the two-term +-pi/2 shift is exact.
# Not the controlled rotations crx/cry/crz: their generator also has eigenvalue 0 (a four-term rule).
SHIFT_GATES = frozenset({"rx", "ry", "rz", "p", "u1", "rxx", "ryy", "rzz", "rzx", "cp"})
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ModelCircuit:
    circuit: Any  # qiskit.QuantumCircuit, unbound: features then weights
    features: list[str]  # parameter names fed by the preprocessed features, in feature order
    weights: list[str]  # trainable parameter names
    observables: list[str]  # Pauli labels, one per readout

    @property
    def readout(self) -> str:
        return "parity" if len(self.observables) == 1 else "class-z"


def build(spec: QuantumModelSpec, n_features: int, n_classes: int) -> ModelCircuit:
    from qiskit.circuit import QuantumCircuit

    c = spec.circuit
    if n_features > c.qubits:
        raise CircuitError(f"circuit.qubits: {n_features} features need at least {n_features} qubits")
    feature_map = _feature_map(c, n_features)
    ansatz = _ansatz(c)
    model = QuantumCircuit(c.qubits, name="qmlops-model")
    model.compose(feature_map, qubits=range(n_features), inplace=True)
    model.compose(ansatz, inplace=True)
    features = [f"{FEATURE_PREFIX}{i}" for i in range(n_features)]
    weights = [p.name for p in ansatz.parameters]
    return ModelCircuit(model, features, weights, _observables(c, n_classes))


def _feature_map(c: Circuit, n: int) -> Any:
    from qiskit.circuit import Parameter
    from qiskit.circuit.library import pauli_feature_map, z_feature_map, zz_feature_map

    fm = c.feature_map
    entanglement = fm.entanglement.value
    if fm.kind is FeatureMapKind.Z:
        circuit = z_feature_map(n, reps=fm.reps)
    elif fm.kind is FeatureMapKind.ZZ:
        circuit = zz_feature_map(n, reps=fm.reps, entanglement=entanglement)
    else:
        circuit = pauli_feature_map(n, reps=fm.reps, entanglement=entanglement, paulis=fm.paulis or ["Z", "ZZ"])
    ordered = sorted(circuit.parameters, key=lambda p: p.index)  # ParameterVector elements: x[0], x[1]...
    return circuit.assign_parameters({p: Parameter(f"{FEATURE_PREFIX}{p.index}") for p in ordered})


def _ansatz(c: Circuit) -> Any:
    from qiskit.circuit import Parameter

    a = c.ansatz
    if a.kind is AnsatzKind.QASM:
        return _qasm_ansatz(c)
    from qiskit.circuit.library import efficient_su2, real_amplitudes

    make = real_amplitudes if a.kind is AnsatzKind.REAL_AMPLITUDES else efficient_su2
    circuit = make(c.qubits, entanglement=a.entanglement.value, reps=a.reps)
    ordered = sorted(circuit.parameters, key=lambda p: p.index)
    return circuit.assign_parameters({p: Parameter(f"{WEIGHT_PREFIX}{p.index}") for p in ordered})


def _qasm_ansatz(c: Circuit) -> Any:
    from controller.api.qasm import check_ansatz_qasm, parse_ansatz_qasm

    assert c.ansatz.qasm is not None
    try:
        check_ansatz_qasm(c.ansatz.qasm, c.qubits)
        circuit = parse_ansatz_qasm(c.ansatz.qasm)
    except ValueError as err:
        raise CircuitError(f"circuit.{err}") from None
    for p in circuit.parameters:
        if p.name.startswith(FEATURE_PREFIX) or not _SAFE_NAME.match(p.name):
            raise CircuitError(
                f"circuit.ansatz.qasm: parameter {p.name!r}: names starting {FEATURE_PREFIX!r} are the features'"
            )
    return circuit


def _observables(c: Circuit, n_classes: int) -> list[str]:
    n = c.qubits
    if n_classes == 2:
        return ["Z" * n if c.observable == "parity" else c.observable]
    if n_classes > n:
        raise CircuitError(f"circuit.qubits: {n_classes} classes are read from one qubit each; {n} qubits are too few")
    return ["I" * (n - 1 - k) + "Z" + "I" * k for k in range(n_classes)]


def check_shift_rule(model: ModelCircuit) -> None:
    """Parameter-shift gradients are exact when each weight drives one rotation gate, linearly with
    coefficient ±1. The library ansatzes do; an OpenQASM ansatz is checked."""
    uses: dict[str, int] = dict.fromkeys(model.weights, 0)
    for instruction in model.circuit.data:
        for param in instruction.operation.params:
            for p in getattr(param, "parameters", ()):
                if p.name not in uses:
                    continue
                uses[p.name] += 1
                if instruction.operation.name not in SHIFT_GATES or not _unit_linear(param, p):
                    raise CircuitError(
                        f"training.optimizer.kind: parameter-shift gradients need {p.name!r} in a rotation gate "
                        f"as ±{p.name} (found {instruction.operation.name}({param})); use COBYLA, SPSA or NelderMead"
                    )
    shared = [name for name, count in uses.items() if count > 1]
    if shared:
        raise CircuitError(
            f"training.optimizer.kind: parameter-shift gradients need each weight in one gate; {shared[0]!r} is in "
            f"{uses[shared[0]]}; use COBYLA, SPSA or NelderMead"
        )


def _unit_linear(expression: Any, parameter: Any) -> bool:
    try:
        slope = complex(expression.gradient(parameter))
    except (TypeError, ValueError, AttributeError):
        return False
    return abs(abs(slope) - 1.0) < 1e-12


def lift_feature_angles(circuit: Any, features: list[str]) -> tuple[Any, dict[str, Any]]:
    """``circuit`` with every gate angle that is an expression of the features alone (a ZZFeatureMap's
    ``2(pi - x_0)(pi - x_1)``) replaced by a parameter of its own, and those expressions by name.

    The values of these parameters are computed once per sample (:func:`parameter_table`); a primitive
    handed the expressions evaluates each of them per sample on every job (Aer does it in Python: a
    third of a job's time at 8 qubits and 455 samples). Plain features, weights and expressions of weights are left as they
    are, so the circuit computes the very same states."""
    from qiskit.circuit import CircuitInstruction, Parameter, ParameterExpression

    names = set(features)
    lifted: dict[str, Any] = {}  # expression text -> its parameter
    expressions: dict[str, Any] = {}

    def lift(value: Any) -> Any:
        if not isinstance(value, ParameterExpression) or isinstance(value, Parameter) or not value.parameters:
            return value
        if not {p.name for p in value.parameters} <= names:
            return value
        key = str(value)
        if key not in lifted:
            name = f"{ANGLE_PREFIX}{len(lifted)}"
            lifted[key], expressions[name] = Parameter(name), value
        return lifted[key]

    out = circuit.copy_empty_like()  # the global phase stays: Runtime's Estimator binds no parameter there
    for instruction in circuit.data:
        operation = instruction.operation
        params = [lift(p) for p in operation.params]
        if any(new is not old for new, old in zip(params, operation.params, strict=True)):
            operation = operation.to_mutable()
            operation.params = params
        out._append(CircuitInstruction(operation, instruction.qubits, instruction.clbits))
    return out, expressions


def angle_values(expression: Any, features: np.ndarray, model: ModelCircuit) -> np.ndarray:
    """A lifted angle's value for each row of ``features``."""
    parameters = list(expression.parameters)
    columns = features[:, [model.features.index(p.name) for p in parameters]]
    return np.array([float(expression.bind(dict(zip(parameters, map(float, row), strict=True)))) for row in columns])


def column_order(circuit: Any) -> list[str]:
    """The names of ``circuit.parameters`` in the order a primitive binds parameter values."""
    return [p.name for p in circuit.parameters]


def parameter_table(
    circuit: Any,
    features: np.ndarray,
    weights: dict[str, float] | np.ndarray,
    model: ModelCircuit,
    angles: dict[str, Any] | None = None,
) -> np.ndarray:
    """Parameter values for ``circuit`` by name: one row per sample (features and the ``angles``
    lifted from them), weights broadcast."""
    order = column_order(circuit)
    values = np.empty((features.shape[0], len(order)))
    w = dict(zip(model.weights, weights, strict=True)) if isinstance(weights, np.ndarray) else weights
    for col, name in enumerate(order):
        if angles and name in angles:
            values[:, col] = angle_values(angles[name], features, model)
        elif name.startswith(FEATURE_PREFIX) and name in model.features:
            values[:, col] = features[:, model.features.index(name)]
        else:
            values[:, col] = w[name]
    return values
