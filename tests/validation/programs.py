"""OpenQASM ansatz programs for the bounds tests: the issue's doubling gates and a deep chain."""

from __future__ import annotations

HEAD = 'OPENQASM 3.0;\ninclude "stdgates.inc";\ninput float w;\nqubit[4] q;\n'


def doubling(levels: int) -> str:
    """The issue's program: ``levels`` gates, each calling the one below twice (2**levels operations)."""
    gates = "gate g0 a, b { cx a, b; }\n" + "".join(
        f"gate g{i} a, b {{ g{i - 1} a, b; g{i - 1} b, a; }}\n" for i in range(1, levels + 1)
    )
    return HEAD + gates + f"ry(w) q[0];\ng{levels} q[0], q[1];\n"


def chain(levels: int) -> str:
    """``levels`` gates, each calling the one below once: deep, but small."""
    gates = "gate c0 a { ry(0.1) a; }\n" + "".join(f"gate c{i} a {{ c{i - 1} a; }}\n" for i in range(1, levels + 1))
    return HEAD + gates + f"ry(w) q[0];\nc{levels} q[0];\n"
