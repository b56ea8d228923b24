"""``qmlops validate`` as pull-request CI calls it: a fresh process on a handful of specs, timed whole.

    .venv/bin/python benchmarks/validate_speed.py [--runs 7]

Each case runs ``qmlops validate PATH...`` (the console script beside this Python, else
``python -m controller.cli.main``) ``--runs`` times in a subprocess; the median wall-clock is printed
with its ratio to the reference, 0.5 s for a handful of specs (issue 13), and the heavy packages the
process imported (checked in one more run, by the same ``main`` called in-process, then
``sys.modules``). The interpreter's own start (``python -c pass``) is printed for scale. Beside the
wall-clock, the median CPU time (user + system) of the process is printed: on a machine shared with
other work the wall-clock grows with the load, the CPU time much less.

Cases: the demo's two specs (one names ``fake:manila``: its device is known from qiskit-ibm-runtime's
snapshot files, without importing it); six specs, the demo's and four examples that need no Qiskit;
and the QASM-ansatz example alone, which needs Qiskit's OpenQASM importer and pays for it (no target).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SECONDS = 0.5
HEAVY = ("qiskit_ibm_runtime", "qiskit", "qiskit_aer", "qiskit_qasm3_import", "scipy", "sklearn", "kopf", "numpy")

NO_QISKIT = (
    "specs/",
    "examples/file-dataset.yaml",
    "examples/iris-local-aer.yaml",
    "examples/noisy-fake-backend.yaml",
    "examples/pipeline-nightly.yaml",
)


@dataclass(frozen=True)
class Case:
    name: str
    paths: tuple[str, ...]
    target: bool  # whether the 0.5 s reference applies


CASES = (
    Case("the demo's 2 specs (specs/)", ("specs/",), True),
    Case("6 specs needing no Qiskit", NO_QISKIT, True),
    Case("1 spec with a QASM ansatz", ("examples/qasm-ansatz.yaml",), False),
)


@dataclass(frozen=True)
class Result:
    case: Case
    seconds: list[float]
    cpu_seconds: list[float]
    exit_code: int
    imported: list[str]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def ratio(self) -> float:
        return self.median / REFERENCE_SECONDS


def command() -> list[str]:
    script = Path(sys.executable).parent / "qmlops"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "controller.cli.main"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: Sequence[str]) -> tuple[float, float, int]:
    """Wall-clock and CPU seconds of one run of ``argv``, and its exit code."""
    cpu, start = _children_cpu(), time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start, _children_cpu() - cpu, done.returncode


def heavy_imports(paths: Sequence[str]) -> list[str]:
    """The packages of ``HEAVY`` that ``qmlops validate PATHS`` imports, from the process's sys.modules."""
    probe = (
        "import contextlib, io, json, sys\n"
        "from controller.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    main(['validate', *sys.argv[2:]])\n"
        "print(json.dumps([m for m in json.loads(sys.argv[1]) if m in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(HEAVY), *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    imported: list[str] = json.loads(done.stdout)
    return imported


def measure(case: Case, runs: int) -> Result:
    argv = [*command(), "validate", *case.paths]
    timed(argv)  # warm the page cache and the bytecode caches once
    seconds, cpu_seconds, codes = [], [], set()
    for _ in range(runs):
        elapsed, cpu, code = timed(argv)
        seconds.append(elapsed)
        cpu_seconds.append(cpu)
        codes.add(code)
    return Result(case, seconds, cpu_seconds, max(codes), heavy_imports(case.paths))


def interpreter_start(runs: int) -> float:
    return statistics.median(timed([sys.executable, "-c", "pass"])[0] for _ in range(runs))


def format_result(result: Result) -> str:
    spread = f"{min(result.seconds):.3f}-{max(result.seconds):.3f}"
    target = f"{result.ratio:.2f}x the {REFERENCE_SECONDS} s reference" if result.case.target else "no target"
    imported = ", ".join(result.imported) or "none"
    cpu = statistics.median(result.cpu_seconds)
    return (
        f"{result.case.name:<30} median {result.median:.3f} s ({spread} over {len(result.seconds)} runs; "
        f"CPU {cpu:.3f} s), {target}; exit {result.exit_code}; heavy imports: {imported}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per case (default: 7)")
    args = parser.parse_args(argv)
    print(f"command: {' '.join(command())} validate PATH...")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    print(f"{'interpreter start (-c pass)':<30} median {interpreter_start(args.runs):.3f} s")
    results = [measure(case, args.runs) for case in CASES]
    for result in results:
        print(format_result(result))
    return 0 if all(r.exit_code == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
