"""What an OpenQASM ansatz costs to check, at and past the limits of ``controller/api/qasm.py``.

    .venv/bin/python benchmarks/qasm_bounds.py

Each program is checked in a fresh process (``check_ansatz_qasm``: the scan, then Qiskit's importer
for a program that passes), after Qiskit is imported, so that the figures are the check's own:

* ``doubling-16``: the issue's program, 16 levels of gates that each call the one below twice (65,536
  operations; 17.8 s and 712 MB before the scan): refused by the scan;
* ``loop``: ``for int i in [0:1000000000]``: refused by the scan;
* ``doubling-10``: the deepest doubling within ``MAX_QASM_OPERATIONS`` (9,191 operations counted);
* ``flat-64k``: ``MAX_QASM_BYTES`` of straight-line two-qubit gates (about 4,300), the largest text;
* ``wide``: one gate of 1,900 rotations broadcast over a 4-qubit register (9,506 operations counted).

Printed per program: the verdict, the scan's time, the whole check's time and the process's peak
memory above what it held once Qiskit was imported. Nothing here asserts a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.validation.programs import HEAD, doubling  # noqa: E402

ONE = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from qiskit import qasm3
from controller.api.qasm import check_ansatz_qasm, scan_ansatz_qasm
program = sys.stdin.read()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    scan_ansatz_qasm(program)
except ValueError:
    pass
scanned = time.perf_counter() - start
start = time.perf_counter()
try:
    check_ansatz_qasm(program, 4)
    verdict = "accepted"
except ValueError as err:
    verdict = str(err).split(": ", 1)[1][:90]
checked = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"verdict": verdict, "scan": scanned, "check": checked, "mb": (peak - base) / 1024}))
"""


def programs() -> dict[str, str]:
    flat = HEAD + "ry(w) q[0];\n"
    while len(flat) < 65_536 - 20:
        flat += "cx q[0], q[1];\n"
    return {
        "doubling-16": doubling(16),
        "loop": HEAD + "for int i in [0:1000000000] {\n  ry(w) q[0];\n}\n",
        "doubling-10": doubling(10),
        "flat-64k": flat,
        "wide": HEAD + "gate g a { " + "rx(0.1) a; " * 1_900 + "}\nry(w) q[0];\ng q;\n",
    }


def main() -> int:
    print(f"{'program':12} {'bytes':>6} {'scan ms':>8} {'check s':>8} {'+MB':>6}  verdict")
    for name, program in programs().items():
        done = subprocess.run(
            [sys.executable, "-c", ONE, str(ROOT)], input=program, capture_output=True, text=True, check=True
        )
        r = json.loads(done.stdout)
        size = len(program.encode())
        print(f"{name:12} {size:6} {r['scan'] * 1e3:8.2f} {r['check']:8.3f} {r['mb']:6.0f}  {r['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
