"""An OpenQASM ansatz is scanned before Qiskit's importer expands it: nesting, expansion, loops and
everything else that grows are refused with the line of the program and the limit, in the file's
``file:line:col: spec.circuit.ansatz.qasm:`` form, and a program within the limits trains as before."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.api import qasm
from controller.api.qasm import (
    MAX_QASM_BYTES,
    MAX_QASM_CONTROLS,
    MAX_QASM_EXPRESSION_DEPTH,
    MAX_QASM_GATE_DEPTH,
    MAX_QASM_OPERATIONS,
    QasmRefused,
    check_ansatz_qasm,
    scan_ansatz_qasm,
)
from controller.engine import training
from controller.engine.documents import load_file
from tests.api.specs import ROOT, changed, model, to_yaml
from tests.training.specs import QASM_ANSATZ, optimizer, spec
from tests.validation.cli import qmlops, write
from tests.validation.programs import HEAD, chain, doubling


def spec_file(folder: Path, program: str) -> Path:
    obj = changed(model(), "spec.circuit.ansatz", {"kind": "QASM", "qasm": program})
    text = to_yaml(obj)
    return write(folder, "model.yaml", text)


def at_qasm(path: Path) -> str:
    """``file:line:col`` of the program's text in the spec file (the ``qasm:`` key's value)."""
    documents, _ = load_file(str(path))
    line, column = documents[0].position(("spec", "circuit", "ansatz", "qasm"))
    return f"{path}:{line}:{column}"


# --- the reproductions -------------------------------------------------------------------------


def test_nested_gates_are_refused_before_expansion_in_little_memory(tmp_path: Path) -> None:
    """16 levels of doubling: 17.8 s and 712 MB in ``qmlops validate`` before the scan. Now the count is
    computed from the definitions and refused; the peak memory of the whole ``qmlops validate``
    process (Python, pydantic, the CLI) is measured by a parent process that runs it alone."""
    program = doubling(16)
    assert len(program) < 800
    path = spec_file(tmp_path, program)
    measure = (
        "import json, resource, subprocess, sys\n"
        "out = subprocess.run([sys.executable, '-m', 'controller', 'validate', sys.argv[1]],"
        " capture_output=True, text=True, timeout=120)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024\n"
        "print(json.dumps({'code': out.returncode, 'out': out.stdout, 'peak_mb': peak}))\n"
    )
    done = subprocess.run([sys.executable, "-c", measure, str(path)], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    assert result["code"] == 1
    assert result["peak_mb"] < 200, result
    assert result["out"].startswith(
        f"{at_qasm(path)}: spec.circuit.ansatz.qasm: line 16, column 1: the program expands to more than 10,000 operations"
    )
    assert "(MAX_QASM_OPERATIONS)" in result["out"]


def test_a_loop_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    program = HEAD + "for int i in [0:1000000000] {\n  ry(w) q[0];\n}\n"
    path = spec_file(tmp_path, program)
    result = qmlops(capsys, "validate", str(path))
    assert result.code == 1
    assert result.lines == [
        f"{at_qasm(path)}: spec.circuit.ansatz.qasm: line 5, column 1: {qasm.LOOPS}",
    ]


# --- every limit, with its line and figure --------------------------------------------------------------

REFUSED: list[tuple[str, str, str]] = [
    ("while", HEAD + "while (true) { ry(w) q[0]; }\n", f"line 5, column 1: {qasm.LOOPS}"),
    ("loop-in-a-gate", HEAD + "gate g a { for int i in [0:9] { x a; } }\n", f"line 5, column 12: {qasm.LOOPS}"),
    (
        "deep",
        chain(MAX_QASM_GATE_DEPTH),
        f"line {5 + MAX_QASM_GATE_DEPTH}, column 1: gate 'c{MAX_QASM_GATE_DEPTH}' nests gate definitions "
        f"{MAX_QASM_GATE_DEPTH + 1} levels deep; at most {MAX_QASM_GATE_DEPTH} (MAX_QASM_GATE_DEPTH)",
    ),
    (
        "wide",
        HEAD + "gate g a { " + "rx(0.1) a; " * 2_000 + "}\n" + "g q;\n",  # 2,001 x 4 qubits + the body
        "line 6, column 1: the program expands to more than 10,000 operations by this statement "
        "(10,004 so far, gate definitions included); at most 10,000 (MAX_QASM_OPERATIONS)",
    ),
    (
        "inverses",
        HEAD + "gate g a { " + "rx(0.1) a; " * 3_000 + "}\n" + "inv @ inv @ g q[0];\n",
        "the program expands to more than 10,000 operations by this statement (12,003 so far",
    ),
    (
        "pow",
        HEAD + "pow(1000000) @ ry(w) q[0];\n",
        "line 5, column 1: the pow @ modifier is not accepted in an ansatz",
    ),
    (
        "controls",
        HEAD + f"ctrl({MAX_QASM_CONTROLS + 1}) @ ry(w) q[0], q[1], q[2], q[3];\n",
        f"line 5, column 1: {MAX_QASM_CONTROLS + 1} control qubits on one gate; "
        f"at most {MAX_QASM_CONTROLS} (MAX_QASM_CONTROLS)",
    ),
    (
        "controlled-definition",
        HEAD + "gate g a { ry(0.1) a; }\nctrl @ g q[0], q[1];\n",
        "line 6, column 8: ctrl @ and negctrl @ apply to built-in and standard gates only, not to gate 'g'",
    ),
    (
        "parentheses",
        HEAD + "ry(" + "(" * 40 + "w" + ")" * 40 + ") q[0];\n",
        f"line 5, column {4 + MAX_QASM_EXPRESSION_DEPTH}: an argument nested more than "
        f"{MAX_QASM_EXPRESSION_DEPTH} parentheses deep (MAX_QASM_EXPRESSION_DEPTH)",
    ),
    (
        "register",
        "OPENQASM 3.0;\ninput float w;\nqubit[1000000000] q;\n",
        "line 3, column 7: a register of 1000000000 qubits; a register has 1 to 156 (MAX_QASM_QUBITS)",
    ),
    ("measure", HEAD + "bit[4] c;\nc = measure q;\n", f"line 5, column 1: {qasm.UNITARY}"),
    ("branch", HEAD + "if (w > 0) { x q[0]; }\n", "line 5, column 1: branches are not accepted in an ansatz"),
    ("subroutine", HEAD + "def f() { }\n", "line 5, column 1: def is not accepted as a statement of an ansatz"),
    ("constant", HEAD + "const int n = 3;\n", "line 5, column 1: const is not accepted as a statement of an ansatz"),
    ("slice", HEAD + "h q[0:2];\n", "line 5, column 6: not a valid OpenQASM 3 program: expected ']' (only single"),
    (
        "hardware-qubit",
        HEAD + "h $0;\n",
        "line 5, column 3: not a valid OpenQASM 3 program: expected a qubit, found '$'",
    ),
    (
        "comment",
        HEAD + "/* never closed\n",
        "line 5, column 1: not a valid OpenQASM 3 program: a /* comment is not closed",
    ),
    ("include", HEAD.replace("stdgates.inc", "/etc/passwd"), "line 2, column 9: include '/etc/passwd' is not allowed"),
]


@pytest.mark.parametrize(("name", "program", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_a_program_past_a_limit_is_refused_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, program: str, message: str
) -> None:
    path = spec_file(tmp_path, program)
    result = qmlops(capsys, "validate", str(path))
    assert result.code == 1
    [line] = result.lines
    assert line.startswith(f"{at_qasm(path)}: spec.circuit.ansatz.qasm: ")
    assert message in line
    assert "Traceback" not in result.out + result.err


def test_the_importer_never_sees_a_refused_program(monkeypatch: pytest.MonkeyPatch) -> None:
    from qiskit import qasm3

    def importer(_: str) -> None:
        raise AssertionError("the importer was called")

    monkeypatch.setattr(qasm3, "loads", importer)
    monkeypatch.setattr(qasm, "_VERDICTS", {})
    for _, program, message in REFUSED:
        with pytest.raises(QasmRefused) as refused:
            check_ansatz_qasm(program, 4)
        assert message.split(": ", 1)[-1].split(" (")[0] in str(refused.value)


def test_the_text_is_bounded_first() -> None:
    with pytest.raises(QasmRefused, match=f"the program is 65,537 bytes; at most {MAX_QASM_BYTES:,}"):
        scan_ansatz_qasm("x" * (MAX_QASM_BYTES + 1))


def test_the_count_is_the_expansion_with_definitions_included() -> None:
    # A call of g_i is the instance and its body: 3 * 2**i - 1 operations; g_i's body is built once
    # (3 * 2**i - 2, and 1 for g0's); then ry and the call of g10.
    definitions = 1 + sum(3 * 2**i - 2 for i in range(1, 11))
    assert scan_ansatz_qasm(doubling(10)).operations == definitions + 1 + (3 * 2**10 - 1)
    assert scan_ansatz_qasm(chain(MAX_QASM_GATE_DEPTH - 1)).depth == MAX_QASM_GATE_DEPTH
    summary = scan_ansatz_qasm(HEAD + "gate g(t) a, b { ry(t) a; cx a, b; }\nh q;\ninv @ g(w) q[0], q[1];\n")
    assert (summary.qubits, summary.operations, summary.parameters) == (4, 2 + 4 + 3 * 2, ["w"])
    assert MAX_QASM_OPERATIONS == 10_000  # the figure docs/validate.md gives


# Pieces of the language, so that generated text reaches deep into the scan, not only its tokenizer.
WORDS = [
    *[
        "q[0]",
        "q[1]",
        "q",
        "w",
        "a",
        "b",
        "(",
        ")",
        "{",
        "}",
        "[",
        "]",
        ";",
        ",",
        "@",
        "+",
        "-",
        "*",
        "/",
        "**",
        "1",
        "0.5",
        "pi",
        "$0",
        '"',
        ":",
        "=",
        "/*",
        "*/",
        "//",
    ],
    "\n",
]
WORDS += [
    "gate",
    "inv",
    "ctrl",
    "ctrl(2)",
    "negctrl",
    "pow(2)",
    "ry",
    "cx",
    "h",
    "U",
    "gphase",
    "barrier",
    "qubit[2]",
    "input",
    "float",
    "for",
    "if",
]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(WORDS), max_size=60).map(" ".join)))
def test_any_text_is_scanned_or_refused_with_a_located_message(tail: str) -> None:
    for program in (tail, HEAD + tail):
        try:
            scan_ansatz_qasm(program)
        except QasmRefused as refused:
            assert str(refused).startswith("ansatz.qasm: line ")


# --- a program within the limits ------------------------------------------------------------------------

ACCEPTED = """\
OPENQASM 3;
/* a layered ansatz, with what the subset accepts */
include "stdgates.inc";
input float w_a;
input angle[32] w_b;
qubit[2] q;
gate layer(t) x, y { ry(t) x; cx x, y; }
gate block(t, u) x, y { layer(t) x, y; inv @ layer(-u / 2) y, x; }
block(w_a, w_b) q[0], q[1];
ctrl @ rz(pi / 4) q[0], q[1];
barrier q;
h q;  // broadcast over the register
"""


def test_a_program_within_the_limits_validates_and_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for program, qubits in ((QASM_ANSATZ, 2), (ACCEPTED, 2)):
        obj = changed(model(), "spec.circuit", {"qubits": qubits, "ansatz": {"kind": "QASM", "qasm": program}})
        path = write(tmp_path, "model.yaml", to_yaml(changed(obj, "spec.dataset.reduce.components", qubits)))
        result = qmlops(capsys, "validate", str(path))
        assert (result.code, result.out) == (0, "")
    trained = training.train(
        spec(circuit={"ansatz": {"kind": "QASM", "qasm": ACCEPTED}}, training=optimizer("COBYLA", 2))
    )
    assert sorted(trained.weights) == ["w_a", "w_b"]


def test_a_verdict_is_remembered_so_a_reconcile_imports_a_program_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from qiskit import qasm3

    monkeypatch.setattr(qasm, "_VERDICTS", {})
    calls: list[str] = []
    loads = qasm3.loads
    monkeypatch.setattr(qasm3, "loads", lambda text: calls.append(text) or loads(text))
    program = QASM_ANSATZ + "// remembered\n"
    check_ansatz_qasm(program, 2)
    check_ansatz_qasm(program, 2)
    with pytest.raises(ValueError, match=r"the program uses 2 qubits, circuit\.qubits is 3"):
        check_ansatz_qasm(program, 3)
    assert calls == [program]


# --- the reader and the validator import one way --------------------------------------------------------


def test_documents_does_not_import_the_validator() -> None:
    """``controller.engine.validation`` reads documents; the reader knows nothing of the validator."""
    tree = ast.parse((ROOT / "controller" / "engine" / "documents.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m and m.startswith("controller.engine.validation")}
