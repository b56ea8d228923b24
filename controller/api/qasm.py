"""An OpenQASM 3 ansatz, read as data by Qiskit's importer and checked before anything else sees it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qiskit.circuit import QuantumCircuit

INCLUDE = re.compile(r'include\s+"([^"]*)"\s*;')
ALLOWED_INCLUDES = ("stdgates.inc",)


def parse_ansatz_qasm(source: str) -> QuantumCircuit:
    """Parse an ansatz program. Only ``stdgates.inc`` may be included: the importer would otherwise read
    files from the machine it runs on."""
    for name in INCLUDE.findall(source):
        if name not in ALLOWED_INCLUDES:
            raise ValueError(f'ansatz.qasm: include {name!r} is not allowed; only "stdgates.inc"')
    from qiskit import qasm3

    try:
        return qasm3.loads(source)
    except Exception as err:  # the importer raises several types; all mean "not a program we accept"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"ansatz.qasm: not a valid OpenQASM 3 program: {detail}") from None


def check_ansatz_qasm(source: str, qubits: int) -> None:
    circuit = parse_ansatz_qasm(source)
    if circuit.num_qubits != qubits:
        raise ValueError(f"ansatz.qasm: the program uses {circuit.num_qubits} qubits, circuit.qubits is {qubits}")
    if circuit.num_clbits or any(i.operation.name in ("measure", "reset") for i in circuit.data):
        raise ValueError("ansatz.qasm: an ansatz is unitary: no measure, reset or classical bits")
    if not circuit.parameters:
        raise ValueError("ansatz.qasm: the ansatz has no trainable parameters (declare them as `input float`)")
