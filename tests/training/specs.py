"""Tiny QuantumModel specs for the training tests: 2 qubits, small splits, few iterations."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from controller.api.quantummodel import QuantumModelSpec

BASE: dict[str, Any] = {
    "owner": "alice@example.com",
    "dataset": {
        "source": "builtin:iris",
        "features": ["petal_length", "petal_width"],
        "classes": [0, 1],
        "testFraction": 0.5,
        "seed": 42,
    },
    "circuit": {
        "qubits": 2,
        "featureMap": {"kind": "ZFeatureMap", "reps": 1},
        "ansatz": {"kind": "RealAmplitudes", "reps": 1},
    },
    "training": {
        "backend": "local:statevector",
        "shots": 64,
        "optimizer": {"kind": "COBYLA", "maxIterations": 4},
        "seed": 7,
    },
}

# An OpenQASM 3 ansatz whose every weight drives one rotation, linearly: parameter-shift exact.
QASM_ANSATZ = """\
OPENQASM 3.0;
include "stdgates.inc";
input float w_a;
input float w_b;
input float w_c;
qubit[2] q;
ry(w_a) q[0];
ry(w_b) q[1];
cx q[0], q[1];
rz(w_c) q[1];
cx q[0], q[1];
"""


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def spec(**sections: Any) -> QuantumModelSpec:
    """``BASE`` with sections merged in (nested dicts merge, anything else replaces): ``spec(training={...})``."""
    return QuantumModelSpec.model_validate(merge(BASE, sections))


def optimizer(kind: str, iterations: int, **extra: Any) -> dict[str, Any]:
    return {"optimizer": {"kind": kind, "maxIterations": iterations, **extra}}


TINY_CSV = "file:data/iris01.csv"


def write_iris_csv(path: Path, per_class: int) -> None:
    """The first ``per_class`` rows of iris species 0 and 1, with string labels and an id column."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    names = ["setosa", "versicolor"]
    lines = ["id,petal_length,petal_width,species"]
    for label in (0, 1):
        rows = [i for i, t in enumerate(iris.target) if t == label][:per_class]
        lines += [f"r{i},{iris.data[i][2]},{iris.data[i][3]},{names[label]}" for i in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def tiny(**sections: Any) -> QuantumModelSpec:
    """The tiny CSV dataset (16 rows, half for the test split): for the fake and ibm backends."""
    dataset = {"source": TINY_CSV, "target": "species", "classes": ["setosa", "versicolor"], "testFraction": 0.5}
    return spec(**merge({"dataset": dataset}, sections))
