"""An OpenQASM 3 ansatz: bounded by a scan of its text first, then read as data by Qiskit's importer.

Qiskit's importer expands what it reads: each call of a gate definition copies the definition, so 16
levels of gates that each call the one below twice are 65,536 operations (18 s and 700 MB from a
677-byte program), and a ``for`` loop over a billion iterations reads as one instruction that grows
without end when it runs. So the program is scanned before the importer sees it, by a small tokenizer
and parser of the subset of OpenQASM 3 that an ansatz needs, in one pass over the text (the text size
is checked first), and refused with the line and column of the statement that passes a limit:

- the statements accepted: ``OPENQASM 3[.x];``, ``include "stdgates.inc";``, ``input float|angle``
  parameters, ``qubit``/``qreg`` declarations, ``gate`` definitions, gate calls (with ``inv @``, and
  ``ctrl @``/``negctrl @`` on built-in and standard gates), ``gphase`` and ``barrier``. Everything else
  (loops, branches, subroutines, classical variables, ``pow @``, hardware qubits, slices...) is refused
  with its name, since the scan could not account for what it expands to;
- every gate call costs what it expands to: a standard gate 1, a call of a gate definition 1 plus its
  body's cost (computed once per definition, when it is defined: definitions only call gates defined
  before them, so no recursion is possible and the count is linear), times the register size when an
  operand is a whole register, times one more for each ``inv @``. The importer also builds each
  definition's body once, so the count is the program's expansion plus every definition's;
- the limits are the constants below (docs/validate.md lists them): the scan takes at most about
  0.1 s, and a program that passes is imported in about 3 s and 50 MB at worst, most of it the
  importer's parsing of 64 KB of straight-line gates (see ``benchmarks/qasm_bounds.py``).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from hashlib import sha256
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qiskit.circuit import QuantumCircuit

# --- the limits: documented in docs/validate.md ("OpenQASM ansatz limits") and docs/DESIGN.md ---------

MAX_QASM_BYTES = 64 * 1024  # the program's text, checked first (also the CRD's maxLength)
MAX_QASM_OPERATIONS = 10_000  # operations after expansion, gate definitions included
MAX_QASM_GATE_DEPTH = 16  # gate definitions calling gate definitions, this many levels deep
MAX_QASM_CONTROLS = 2  # control qubits one ctrl @/negctrl @ call adds
MAX_QASM_EXPRESSION_DEPTH = 16  # parentheses nested in one gate argument
MAX_QASM_EXPRESSION_TOKENS = 256  # numbers, names and operators in one call's arguments
MAX_QASM_QUBITS = 156  # the size of a qubit register (the largest circuit.qubits)

ALLOWED_INCLUDES = ("stdgates.inc",)

# name: (parameters, qubits), as Qiskit's importer defines them from stdgates.inc.
STANDARD_GATES: dict[str, tuple[int, int]] = {
    **dict.fromkeys(("x", "y", "z", "h", "s", "sdg", "t", "tdg", "sx", "id"), (0, 1)),
    **dict.fromkeys(("p", "phase", "rx", "ry", "rz", "u1"), (1, 1)),
    "u2": (2, 1),
    "u3": (3, 1),
    **dict.fromkeys(("cx", "CX", "cy", "cz", "ch", "swap"), (0, 2)),
    **dict.fromkeys(("cp", "cphase", "crx", "cry", "crz"), (1, 2)),
    "cu": (4, 2),
    **dict.fromkeys(("ccx", "cswap"), (0, 3)),
}
BUILTIN_GATES: dict[str, tuple[int, int]] = {"U": (3, 1)}

UNITARY = "an ansatz is unitary: no measure, reset or classical bits"
LOOPS = (
    "loops are not accepted in an ansatz (what they expand to has no bound the check can see): write the operations out"
)
# OpenQASM 3 statements outside the subset an ansatz needs, each refused by its name.
_REFUSED_KEYWORDS = {
    "for": LOOPS,
    "while": LOOPS,
    "measure": UNITARY,
    "reset": UNITARY,
    "bit": UNITARY,
    "creg": UNITARY,
    "if": "branches are not accepted in an ansatz",
    "else": "branches are not accepted in an ansatz",
    "switch": "branches are not accepted in an ansatz",
    "pow": "the pow @ modifier is not accepted in an ansatz (Qiskit computes its matrix): write the gates out",
}
_NOT_ACCEPTED = frozenset(
    "def defcal defcalgrammar cal box delay let const extern return break continue end output opaque pragma "  # noqa: SIM905
    "int uint float angle bool complex array duration stretch durationof sizeof void mutable readonly case "
    "default include gate qubit qreg input OPENQASM barrier gphase inv ctrl negctrl".split()
)
_CONSTANTS = frozenset(("pi", "π", "tau", "τ", "euler", "ℇ"))


class QasmRefused(ValueError):
    """A program outside the accepted subset or its limits; the message starts ``ansatz.qasm:``."""


def _refuse(message: str, line: int | None = None, column: int | None = None) -> QasmRefused:
    where = f"line {line}, column {column}: " if line is not None else ""
    return QasmRefused(f"ansatz.qasm: {where}{message}")


def _name(text: str) -> str:
    """A name from the program for a message: quoted when short, never long enough to be a secret."""
    return repr(text) if len(text) <= 20 else f"{text[:12]!r}..."


# --- tokens ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # "name", "number", "string", "op" (one punctuation or operator), "end"
    text: str
    offset: int  # where it starts in the program's text


_TOKEN = re.compile(
    r"(?P<skip>[ \t\r\n\f\v]+|//[^\n]*)"
    r"|(?P<block>/\*)"
    r"|(?P<number>(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[^\W\d]\w*)"
    r'|(?P<string>"[^"\n]*")'
    r"|(?P<op>\*\*|[-+*/%;,()\[\]{}@:=<>!~^&|$#.?])"
)


def position(source: str, offset: int) -> tuple[int, int]:
    """The 1-based line and column of ``offset`` in ``source``."""
    line_start = source.rfind("\n", 0, offset) + 1
    return source.count("\n", 0, offset) + 1, offset - line_start + 1


def tokens(source: str) -> Iterator[Token]:
    """The program's tokens, comments and white space dropped: one pass, each character read once
    (a block comment is closed by one ``find``, so ``/*/*/*...`` costs no more than its length)."""
    pos, size, match_at = 0, len(source), _TOKEN.match
    while pos < size:
        match = match_at(source, pos)
        if match is None:
            raise _refuse(
                f"not a valid OpenQASM 3 program: unexpected character U+{ord(source[pos]):04X}",
                *position(source, pos),
            )
        kind = match.lastgroup
        if kind == "block":
            end = source.find("*/", pos + 2)
            if end < 0:
                raise _refuse("not a valid OpenQASM 3 program: a /* comment is not closed", *position(source, pos))
            pos = end + 2
            continue
        if kind != "skip":
            yield Token(kind or "", match.group(), pos)
        pos = match.end()
    yield Token("end", "", size)


# --- the scan --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateShape:
    parameters: int
    qubits: int
    cost: int = 1  # operations one call expands to
    depth: int = 0  # definitions nested below (0: built-in or standard)
    defined: bool = False  # a gate definition of the program (not built in)


@dataclass
class QasmSummary:
    """What the scan found: a program within the limits."""

    qubits: int = 0
    operations: int = 0  # after expansion, definitions included
    depth: int = 0  # the deepest nesting of gate definitions
    parameters: list[str] = field(default_factory=list)  # the input declarations, in order


class _Scan:
    def __init__(self, source: str) -> None:
        self.source = source
        self.tokens = tokens(source)
        self.token = next(self.tokens)
        self.gates = {name: GateShape(*shape) for name, shape in BUILTIN_GATES.items()}
        self.registers: dict[str, int] = {}  # qubit name: size (1 for a lone qubit)
        self.declared: set[str] = set()  # every name declared at the top level
        self.summary = QasmSummary()
        self.first = True

    # -- reading tokens --

    def advance(self) -> Token:
        token, self.token = self.token, next(self.tokens)
        return token

    def at(self, text: str) -> bool:
        return self.token.kind in ("op", "name") and self.token.text == text

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.at(text):
            raise self.invalid(what or repr(text))
        return self.advance()

    def name(self, what: str) -> Token:
        if self.token.kind != "name":
            raise self.invalid(what)
        return self.advance()

    def integer(self, what: str) -> tuple[int, Token]:
        token = self.token
        if token.kind != "number" or not token.text.replace("_", "").isdigit() or len(token.text) > 30:
            raise self.invalid(f"{what} (a whole number)")
        self.advance()
        return int(token.text.replace("_", "")), token

    def invalid(self, expected: str, token: Token | None = None) -> QasmRefused:
        token = token or self.token
        found = "the end of the program" if token.kind == "end" else _name(token.text)
        return self.wrong(f"expected {expected}, found {found}", token)

    def wrong(self, message: str, token: Token) -> QasmRefused:
        return self.refused(f"not a valid OpenQASM 3 program: {message}", token)

    def refused(self, message: str, token: Token) -> QasmRefused:
        return _refuse(message, *position(self.source, token.offset))

    # -- the program --

    def program(self) -> QasmSummary:
        while self.token.kind != "end":
            self.statement()
            self.first = False
        return self.summary

    def statement(self) -> None:
        token = self.token
        word = token.text if token.kind == "name" else None
        if word == "OPENQASM":
            self.version()
        elif word == "include":
            self.include()
        elif word == "input":
            self.parameter()
        elif word in ("qubit", "qreg"):
            self.qubits()
        elif word == "gate":
            self.definition()
        elif token.kind == "op" and token.text == "@":
            raise self.refused("annotations are not accepted in an ansatz", token)
        elif token.kind == "op" and token.text == "#":
            raise self.refused("pragmas are not accepted in an ansatz", token)
        else:
            self.add(self.operation(scope=None), token)

    def version(self) -> None:
        token = self.advance()
        if not self.first:
            raise self.wrong("OPENQASM is the first statement or none", token)
        number = self.token
        if number.kind != "number" or number.text.split(".")[0] != "3":
            raise self.refused("only OpenQASM 3 programs are accepted (OPENQASM 3.0;)", number)
        self.advance()
        self.expect(";")

    def include(self) -> None:
        self.advance()
        token = self.token
        if token.kind != "string":
            raise self.invalid('a file name in quotes ("stdgates.inc")')
        name = token.text[1:-1]
        if name not in ALLOWED_INCLUDES:
            raise self.refused(f'include {_name(name)} is not allowed; only "stdgates.inc"', token)
        self.advance()
        self.expect(";")
        for gate, shape in STANDARD_GATES.items():
            self.gates.setdefault(gate, GateShape(*shape))

    def parameter(self) -> None:
        self.advance()
        kind = self.name("float or angle")
        if kind.text not in ("float", "angle"):
            raise self.refused(f"only input float and input angle parameters, not input {_name(kind.text)}", kind)
        if self.at("["):
            self.advance()
            bits, token = self.integer("a size in bits")
            if not 1 <= bits <= 128:
                raise self.refused(f"a size of {bits} bits; 1 to 128", token)
            self.expect("]")
        name = self.name("a parameter name")
        self.declare(name)
        self.expect(";")
        self.summary.parameters.append(name.text)

    def qubits(self) -> None:
        keyword = self.advance()
        size: tuple[int, Token] | None = None
        if keyword.text == "qubit" and self.at("["):
            self.advance()
            size = self.integer("a register size")
            self.expect("]")
        name = self.name("a register name")
        if keyword.text == "qreg" and self.at("["):
            self.advance()
            size = self.integer("a register size")
            self.expect("]")
        self.expect(";")
        count = 1 if size is None else size[0]
        if size is not None and not 1 <= count <= MAX_QASM_QUBITS:
            raise self.refused(
                f"a register of {count} qubits; a register has 1 to {MAX_QASM_QUBITS} (MAX_QASM_QUBITS)", size[1]
            )
        self.declare(name)
        self.registers[name.text] = count
        self.summary.qubits += count
        if self.summary.qubits > MAX_QASM_QUBITS:
            raise self.refused(
                f"the program declares {self.summary.qubits} qubits; at most {MAX_QASM_QUBITS} (MAX_QASM_QUBITS)", name
            )

    def declare(self, name: Token) -> None:
        if name.text in self.gates or name.text in self.declared:
            raise self.wrong(f"{_name(name.text)} is defined twice", name)
        if name.text in _NOT_ACCEPTED or name.text in _REFUSED_KEYWORDS or name.text in _CONSTANTS:
            raise self.invalid("a name that is not a keyword", name)
        self.declared.add(name.text)

    def definition(self) -> None:
        keyword = self.advance()
        name = self.name("a gate name")
        self.declare(name)
        parameters: list[str] = []
        if self.at("("):
            self.advance()
            while not self.at(")"):
                parameters.append(self.name("a parameter name").text)
                if not self.at(")"):
                    self.expect(",", "',' or ')'")
            self.advance()
        qubits: list[str] = [self.name("the gate's qubit names").text]
        while self.at(","):
            self.advance()
            qubits.append(self.name("a qubit name").text)
        if len(set(qubits)) != len(qubits) or len(set(parameters)) != len(parameters):
            raise self.wrong("a name appears twice among the gate's parameters and qubits", name)
        self.expect("{", "'{' to start the gate's body")
        scope, cost, depth = set(qubits), 0, 0
        while not self.at("}"):
            if self.token.kind == "end":
                raise self.invalid("'}' to end the gate's body")
            if self.at("gate"):
                raise self.refused("a gate is defined only at the top level of the program", self.token)
            called, nested = self.operation(scope=scope)
            cost, depth = cost + called, max(depth, nested)
        self.advance()
        shape = GateShape(len(parameters), len(qubits), cost=1 + cost, depth=depth + 1, defined=True)
        if shape.depth > MAX_QASM_GATE_DEPTH:
            raise self.refused(
                f"gate {_name(name.text)} nests gate definitions {shape.depth} levels deep; "
                f"at most {MAX_QASM_GATE_DEPTH} (MAX_QASM_GATE_DEPTH)",
                keyword,
            )
        self.add((cost, depth), keyword)  # the importer builds the body once, here
        self.gates[name.text] = shape
        self.summary.depth = max(self.summary.depth, shape.depth)

    def add(self, operation: tuple[int, int], token: Token) -> None:
        self.summary.operations += operation[0]
        if self.summary.operations > MAX_QASM_OPERATIONS:
            raise self.refused(
                f"the program expands to more than {MAX_QASM_OPERATIONS:,} operations by this statement "
                f"({self.summary.operations:,} so far, gate definitions included); "
                f"at most {MAX_QASM_OPERATIONS:,} (MAX_QASM_OPERATIONS)",
                token,
            )

    # -- one operation: a gate call, gphase or barrier --

    def operation(self, scope: set[str] | None) -> tuple[int, int]:
        """The cost and definition depth of one operation; ``scope`` is a gate body's qubit names."""
        start = self.token
        if start.kind != "name":
            raise self.invalid("a statement")
        if start.text in _REFUSED_KEYWORDS:
            raise self.refused(_REFUSED_KEYWORDS[start.text], start)
        if start.text == "barrier":
            self.advance()
            width = self.operands(scope, start, None) if not self.at(";") else 1
            self.expect(";")
            return width, 0
        inverses, controls = self.modifiers()
        name = self.token
        if name.kind != "name":
            raise self.invalid("a gate name")
        if name.text in _REFUSED_KEYWORDS:
            raise self.refused(_REFUSED_KEYWORDS[name.text], name)
        if name.text == "gphase":
            shape = GateShape(1, 0)
        elif name.text in self.gates:
            shape = self.gates[name.text]
        elif name.text in _NOT_ACCEPTED:
            where = "in a gate's body" if scope is not None else "as a statement of an ansatz"
            raise self.refused(f"{name.text} is not accepted {where}", name)
        else:
            hint = ' (include "stdgates.inc" for the standard gates)' if name.text in STANDARD_GATES else ""
            raise self.invalid(f"a defined gate{hint}", name)
        self.advance()
        if controls and shape.defined:
            raise self.refused(
                f"ctrl @ and negctrl @ apply to built-in and standard gates only, not to gate {_name(name.text)} "
                "(its controlled form would be synthesized at a cost the check cannot bound)",
                name,
            )
        arguments = self.arguments(name) if self.at("(") else 0
        if arguments != shape.parameters:
            raise self.wrong(f"{_name(name.text)} takes {shape.parameters} argument(s), not {arguments}", name)
        if name.text == "gphase" and self.at(";") and not controls:
            self.advance()
            return 1, 0
        width = self.operands(scope, name, shape.qubits + controls)
        self.expect(";")
        return shape.cost * (1 + inverses) * width, shape.depth

    def modifiers(self) -> tuple[int, int]:
        inverses, controls = 0, 0
        while self.token.kind == "name" and self.token.text in ("inv", "ctrl", "negctrl", "pow"):
            modifier = self.advance()
            if modifier.text == "pow":
                raise self.refused(_REFUSED_KEYWORDS["pow"], modifier)
            if modifier.text == "inv":
                inverses += 1
            else:
                count = 1
                if self.at("("):
                    self.advance()
                    count, token = self.integer("a number of controls")
                    self.expect(")")
                    if count < 1:
                        raise self.invalid("at least one control", token)
                controls += count
                if controls > MAX_QASM_CONTROLS:
                    raise self.refused(
                        f"{controls} control qubits on one gate; at most {MAX_QASM_CONTROLS} (MAX_QASM_CONTROLS)",
                        modifier,
                    )
            self.expect("@", "'@' after a gate modifier")
        return inverses, controls

    def arguments(self, gate: Token) -> int:
        """Count a call's comma-separated arguments: numbers, names, arithmetic and parentheses, at
        most ``MAX_QASM_EXPRESSION_DEPTH`` deep and ``MAX_QASM_EXPRESSION_TOKENS`` long."""
        self.advance()
        depth, count, used, empty = 0, 0, 0, True  # count: the arguments before the current one
        while True:
            token = self.token
            used += 1
            if used > MAX_QASM_EXPRESSION_TOKENS:
                raise self.refused(
                    f"the arguments of {_name(gate.text)} are longer than {MAX_QASM_EXPRESSION_TOKENS} tokens "
                    "(MAX_QASM_EXPRESSION_TOKENS)",
                    token,
                )
            if token.kind == "end":
                raise self.invalid("')' to close the arguments")
            if token.kind in ("number", "name"):
                empty = False
            elif token.text == "(":
                depth += 1
                if depth > MAX_QASM_EXPRESSION_DEPTH:
                    raise self.refused(
                        f"an argument nested more than {MAX_QASM_EXPRESSION_DEPTH} parentheses deep "
                        "(MAX_QASM_EXPRESSION_DEPTH)",
                        token,
                    )
            elif token.text == ")":
                if depth == 0:
                    if empty and count:
                        raise self.invalid("an argument after ','")
                    self.advance()
                    return count if empty else count + 1
                depth -= 1
            elif token.text == "," and depth == 0:
                if empty:
                    raise self.invalid("an argument")
                count, empty = count + 1, True
            elif token.text not in ("+", "-", "*", "/", "**", "%", ","):
                raise self.invalid("an arithmetic expression")
            self.advance()

    def operands(self, scope: set[str] | None, gate: Token, expected: int | None) -> int:
        """Read the qubit operands; the number of operations the call expands to by broadcasting (the
        size of the registers it is applied to, 1 for single qubits)."""
        sizes: list[int] = []
        while True:
            token = self.name("a qubit")
            if scope is not None:
                if token.text not in scope:
                    raise self.invalid("one of the gate's qubits", token)
                size = 1
            elif token.text in self.registers:
                size = self.registers[token.text]
                if self.at("["):
                    self.advance()
                    index, where = self.integer("a qubit index")
                    if index >= size:
                        raise self.invalid(f"an index below {size}, the size of {_name(token.text)}", where)
                    self.expect("]", "']' (only single indices: q[0], not slices or sets)")
                    size = 1
            else:
                raise self.invalid("a declared qubit or register", token)
            sizes.append(size)
            if not self.at(","):
                break
            self.advance()
        if expected is not None and len(sizes) != expected:
            raise self.wrong(f"{_name(gate.text)} takes {expected} qubit(s) here, not {len(sizes)}", gate)
        wide = {s for s in sizes if s > 1}
        if len(wide) > 1:
            raise self.wrong("a call broadcast over registers needs registers of one size", gate)
        return wide.pop() if wide else 1


def scan_ansatz_qasm(source: str) -> QasmSummary:
    """Check ``source`` against the accepted subset and the limits, in one pass over its text, before
    anything expands it; raise :class:`QasmRefused` (a ``ValueError``) naming the line, column and
    limit of the first statement that does not pass."""
    size = len(source.encode("utf-8", errors="replace"))
    if size > MAX_QASM_BYTES:
        raise _refuse(f"the program is {size:,} bytes; at most {MAX_QASM_BYTES:,} (MAX_QASM_BYTES)")
    return _Scan(source).program()


def parse_ansatz_qasm(source: str) -> QuantumCircuit:
    """The program as a circuit, once :func:`scan_ansatz_qasm` has passed it. Only ``stdgates.inc``
    may be included: the importer would otherwise read files from the machine it runs on."""
    scan_ansatz_qasm(source)
    from qiskit import qasm3

    try:
        return qasm3.loads(source)
    except Exception as err:  # the importer raises several types; all mean "not a program we accept"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"ansatz.qasm: not a valid OpenQASM 3 program: {detail[:200]}") from None


def check_ansatz_qasm(source: str, qubits: int) -> None:
    """The whole check of an ansatz program: the scan, then the importer's reading of it. A verdict
    is remembered by the program's digest, so a spec read at every reconcile is imported once."""
    key = (sha256(source.encode("utf-8", errors="replace")).hexdigest(), qubits)
    with _VERDICTS_LOCK:
        known = _VERDICTS.get(key, _UNKNOWN)
    if isinstance(known, tuple):
        kind, message = known
        raise kind(message)
    if known is None:
        return
    try:
        _check(source, qubits)
    except ValueError as err:
        _remember(key, (QasmRefused if isinstance(err, QasmRefused) else ValueError, str(err)))
        raise
    _remember(key, None)


def _check(source: str, qubits: int) -> None:
    summary = scan_ansatz_qasm(source)
    if summary.qubits != qubits:
        raise ValueError(f"ansatz.qasm: the program uses {summary.qubits} qubits, circuit.qubits is {qubits}")
    if not summary.parameters:
        raise ValueError("ansatz.qasm: the ansatz has no trainable parameters (declare them as `input float`)")
    circuit = parse_ansatz_qasm(source)
    if circuit.num_qubits != qubits:
        raise ValueError(f"ansatz.qasm: the program uses {circuit.num_qubits} qubits, circuit.qubits is {qubits}")
    if circuit.num_clbits or any(i.operation.name in ("measure", "reset") for i in circuit.data):
        raise ValueError(f"ansatz.qasm: {UNITARY}")
    if not circuit.parameters:
        raise ValueError("ansatz.qasm: the ansatz has no trainable parameters (declare them as `input float`)")


_UNKNOWN = object()
# (digest, qubits): None for a program that passed, or the refusal to raise again.
_VERDICTS: dict[tuple[str, int], tuple[type[ValueError], str] | None] = {}
_VERDICTS_LOCK = threading.Lock()
_MAX_VERDICTS = 256


def _remember(key: tuple[str, int], verdict: tuple[type[ValueError], str] | None) -> None:
    with _VERDICTS_LOCK:
        if len(_VERDICTS) >= _MAX_VERDICTS:
            _VERDICTS.clear()
        _VERDICTS[key] = verdict
