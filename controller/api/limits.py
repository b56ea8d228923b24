"""Limits from the machine: what a spec may ask of memory, time, shots and QPU time, checked before any
work starts. Every limit a spec's figures imply lives here, with the formula behind it (a single field's
own bounds, like a training's timeout, stand with the field's type); docs/validate.md (Limits) states them.

``qmlops validate`` and the admission webhook refuse a spec that breaks one, at the field it blames; the
trainer checks the same limits again with the real figures (the dataset's own rows) before its first job.
Nothing here imports Qiskit: a fake device's qubit count is read from the snapshot file
qiskit-ibm-runtime ships, without importing the package.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from controller.api.common import duration_seconds
from controller.api.devices import fake_device_qubits
from controller.api.quantummodel import (
    DEFAULT_TRAINING_TIMEOUT,
    GRADIENT_OPTIMIZERS,
    AnsatzKind,
    Dataset,
    OptimizerKind,
    QuantumModelSpec,
    Training,
)

KiB, MiB, GiB = 1024, 1024**2, 1024**3

# --- memory: the simulators ----------------------------------------------------------------------------

MEMORY_LIMIT_ENV = "QMLOPS_MEMORY_LIMIT"
# What one training's simulation may hold: the operator's pod has 3 GiB (deploy/deployment.yaml), of
# which the operator itself needs up to 768 MiB.
DEFAULT_MEMORY_LIMIT = 2 * GiB
AMPLITUDE_BYTES = 16  # a complex128 amplitude: a statevector of n qubits is 2^n of them
# Peak memory of one evaluation, in statevectors: measured 4.1 (StatevectorEstimator, 22 and 23 qubits:
# the bound circuit's state, its evolution and the observable's expectation) and 1.4 per experiment for
# Aer's statevector method (23 qubits). Samples are evaluated one after the other on local:statevector;
# Aer runs as many in parallel as fit its max_memory_mb, which the trainer sets to the memory limit.
STATEVECTOR_COPIES = 4
AER_COPIES = 2
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|k)?\s*$")
_UNITS = {None: 1, "Ki": KiB, "Mi": MiB, "Gi": GiB, "Ti": 1024**4, "k": 1000, "K": 1000, "M": 10**6}
_UNITS |= {"G": 10**9, "T": 10**12}


def memory_limit() -> int:
    """Bytes one training's simulation may hold: ``$QMLOPS_MEMORY_LIMIT`` as a Kubernetes quantity
    (``4Gi``, ``512Mi``, ``3G`` or bytes), else 2 GiB. A value that is not a quantity is ignored."""
    match = _QUANTITY.match(os.environ.get(MEMORY_LIMIT_ENV, ""))
    if match is None:
        return DEFAULT_MEMORY_LIMIT
    return int(float(match[1]) * _UNITS[match[2]])


def simulation_bytes(backend: str, qubits: int) -> int | None:
    """The memory a simulation of ``qubits`` needs on ``backend`` (None: nothing simulated here)."""
    state = (2**qubits) * AMPLITUDE_BYTES
    if backend == "local:statevector":
        return state * STATEVECTOR_COPIES
    if backend == "local:aer" or backend.startswith("fake:"):
        return state * AER_COPIES  # fake devices run on Aer in local testing mode
    return None


def max_simulated_qubits(backend: str, limit: int | None = None) -> int:
    """The most qubits ``backend`` simulates within the memory limit."""
    limit = memory_limit() if limit is None else limit
    copies = STATEVECTOR_COPIES if backend == "local:statevector" else AER_COPIES
    return max(0, (limit // (AMPLITUDE_BYTES * copies)).bit_length() - 1)


def qubit_problem(backend: str, qubits: int) -> str | None:
    """Why ``backend`` cannot run ``qubits`` qubits, or None. ``ibm:`` devices are not known offline."""
    if backend.startswith("fake:"):
        device = backend.removeprefix("fake:")
        own = fake_device_qubits(device)
        if own is not None and qubits > own:
            return f"{backend} has {own} qubits; circuit.qubits is {qubits}"
    need = simulation_bytes(backend, qubits)
    if need is None:
        return None
    limit = memory_limit()
    if need <= limit:
        return None
    simulator = "local:statevector" if backend == "local:statevector" else "Aer's statevector method"
    copies = STATEVECTOR_COPIES if backend == "local:statevector" else AER_COPIES
    where = "" if backend.startswith("local:") else f"{backend} is simulated by Aer: "
    return (
        f"{where}{qubits} qubits need {_bytes(need)} on {simulator} (2^{qubits} amplitudes x "
        f"{AMPLITUDE_BYTES} bytes x {copies} copies), over the memory limit of {_bytes(limit)} "
        f"(${MEMORY_LIMIT_ENV}): at most {max_simulated_qubits(backend, limit)} qubits"
    )


def _bytes(n: float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


# --- memory: datasets -------------------------------------------------------------------------------------

MAX_DATASET_BYTES = 32 * MiB  # a CSV file is read up to this many bytes, never further
MAX_DATASET_ROWS = 100_000  # data rows; every training job evaluates every training row
DATASET_VALUE_BYTES = 8  # a float64
# Peak memory of loading a CSV, per cell, over its 8 bytes as a float64: measured 23x to 32x (each cell
# is a str in its row's list, then a Python float, then the array's 8 bytes).
DATASET_MEMORY_FACTOR = 32
MAX_DATASET_MEMORY = 256 * MiB


def dataset_memory(rows: int, columns: int) -> int:
    """The memory estimate of loading ``rows`` x ``columns`` cells: rows x columns x 8 bytes x 32."""
    return rows * columns * DATASET_VALUE_BYTES * DATASET_MEMORY_FACTOR


def max_dataset_rows(columns: int) -> int:
    """The most data rows of ``columns`` cells a training loads: 100,000, fewer for wide files."""
    per_row = dataset_memory(1, max(columns, 1))
    return min(MAX_DATASET_ROWS, MAX_DATASET_MEMORY // per_row)


def dataset_problem(where: str, rows: int, columns: int) -> str | None:
    """Why ``rows`` data rows of ``columns`` cells are more than a training may load, or None. Called as
    rows are counted, so the reader stops at the first row over the bound."""
    allowed = max_dataset_rows(columns)
    if rows <= allowed:
        return None
    if allowed == MAX_DATASET_ROWS:
        return f"{where} has more than {MAX_DATASET_ROWS:,} data rows, the limit"
    return (
        f"{where} has more than {allowed:,} data rows of {columns} columns: loading them needs more than "
        f"{_bytes(MAX_DATASET_MEMORY)} (rows x columns x {DATASET_VALUE_BYTES} bytes x {DATASET_MEMORY_FACTOR}), "
        "the limit"
    )


class DatasetTooLarge(ValueError):
    """A dataset file over a bound; the message names the file and the limit, never its content."""


class _CountedBytes(io.RawIOBase):
    """A binary file that refuses to be read past ``MAX_DATASET_BYTES``."""

    def __init__(self, handle: io.BufferedReader, where: str) -> None:
        self._handle, self._where, self.count = handle, where, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = self._handle.readinto(buffer)
        self.count += n or 0
        if self.count > MAX_DATASET_BYTES:
            raise DatasetTooLarge(
                f"{self._where} is larger than {_bytes(MAX_DATASET_BYTES)}, the limit for a dataset file"
            )
        return n or 0


def csv_rows(path: Path, where: str) -> Iterator[tuple[int, list[str]]]:
    """The non-blank rows of the CSV file at ``path``, header first, each with the line it starts on
    (blank lines and quoted newlines count), read as a stream: :class:`DatasetTooLarge` at the first byte
    or row over a bound, before the rest is read. ``UnicodeDecodeError`` (not UTF-8), ``csv.Error`` (a
    field over csv's own 128 KiB, a NUL byte) and ``OSError`` reach the caller."""
    with open(path, "rb") as handle:
        counted = _CountedBytes(handle, where)
        text = io.TextIOWrapper(io.BufferedReader(counted), encoding="utf-8-sig", newline="")
        reader, line, columns, rows = csv.reader(text), 1, 0, 0
        for row in reader:
            if any(cell.strip() for cell in row):
                if columns:
                    rows += 1
                    problem = dataset_problem(where, rows, columns)
                    if problem is not None:
                        raise DatasetTooLarge(problem)
                else:
                    columns = len(row)
                yield line, row
            line = reader.line_num + 1


# --- time -----------------------------------------------------------------------------------------------------


def timeout_seconds(training: Training) -> float:
    return duration_seconds(training.timeout)


def timeout_key(training: Training) -> str:
    """What a training's key adds for a timeout other than the default: a training that timed out is
    tried again when its timeout changes, while the spec digest (what is trained) stays the same."""
    seconds = timeout_seconds(training)
    return "" if seconds == duration_seconds(DEFAULT_TRAINING_TIMEOUT) else f"|timeout={seconds:g}"


def format_seconds(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{seconds:.1f}s"


# --- shots and QPU time ---------------------------------------------------------------------------------------

# The most shots one training may take, all jobs together: about 29 days of QPU time at
# SECONDS_PER_SHOT, hours of sampling on a fake backend. The DESIGN example's training takes 8.2 million.
MAX_TRAINING_SHOTS = 10**10
# QPU time per shot for the estimate: the default repetition delay (rep_delay) of every IBM device in
# qiskit-ibm-runtime's snapshots. The circuit itself and each job's overhead add to it, so the estimate
# is a lower bound of what IBM bills: a spec it refuses would break its budget for certain.
SECONDS_PER_SHOT = 250e-6
# Points (circuits per sample) of one job, per optimizer (see controller/engine/training/optimizers.py):
# COBYLA and Nelder-Mead evaluate one point, SPSA three (the point and its two perturbations; without a
# learningRate, its first job calibrates on 1 + 2 x 5 points), the gradient optimizers 2W + 1 for W weights
# (the point and two parameter shifts per weight).
SPSA_POINTS = 3
SPSA_CALIBRATION_POINTS = 1 + 2 * 5
# Rows per class of the builtin datasets (scikit-learn's, and ad_hoc's 60 per class).
BUILTIN_CLASS_ROWS: dict[str, dict[int, int]] = {
    "iris": {0: 50, 1: 50, 2: 50},
    "wine": {0: 59, 1: 71, 2: 48},
    "breast_cancer": {0: 212, 1: 357},
    "moons": {0: 100, 1: 100},
    "circles": {0: 100, 1: 100},
    "ad_hoc": {0: 60, 1: 60},
}
_QASM_INPUT = re.compile(r"\binput\s+(?:float|angle)(?:\s*\[\s*\d+\s*\])?\s+[A-Za-z_]\w*\s*;")


@dataclass(frozen=True)
class Samples:
    train: int
    test: int
    exact: bool  # False: a file dataset's rows are not known from the spec; the fewest it may have


def split_sizes(rows: int, test_fraction: float) -> tuple[int, int]:
    """scikit-learn's train_test_split: the test split takes ceil(rows x fraction)."""
    test = math.ceil(rows * test_fraction)
    return rows - test, test


def samples(dataset: Dataset) -> Samples:
    """The training and test samples of ``dataset`` as far as the spec tells: exact for builtin
    datasets, the fewest a valid split can have (one row per class in each part) for a file."""
    kind, _, name = dataset.source.partition(":")
    if kind == "builtin" and name in BUILTIN_CLASS_ROWS:
        counts = BUILTIN_CLASS_ROWS[name]
        wanted = {str(c) for c in dataset.classes} if dataset.classes else None
        rows = sum(n for label, n in counts.items() if wanted is None or str(label) in wanted)
        train, test = split_sizes(rows, dataset.test_fraction)
        return Samples(train, test, True)
    fewest = len(dataset.classes) if dataset.classes else 2
    return Samples(fewest, fewest, False)


def weight_count(spec: QuantumModelSpec) -> int:
    """Trainable parameters of the ansatz: RealAmplitudes n(reps+1), EfficientSU2 2n(reps+1), an
    OpenQASM ansatz its ``input float`` declarations."""
    ansatz, n = spec.circuit.ansatz, spec.circuit.qubits
    if ansatz.kind is AnsatzKind.QASM:
        return max(1, len(_QASM_INPUT.findall(ansatz.qasm or "")))
    per_layer = n if ansatz.kind is AnsatzKind.REAL_AMPLITUDES else 2 * n
    return per_layer * (ansatz.reps + 1)


@dataclass(frozen=True)
class Estimate:
    """What one training will run at most: its jobs' points, the samples each point is evaluated on,
    and the shots of each evaluation."""

    iterations: int
    points: int  # points over all training jobs
    samples: Samples
    shots: int

    @property
    def executions(self) -> int:
        """Circuits run: every point on every training sample, and the test split once."""
        return self.points * self.samples.train + self.samples.test

    @property
    def total_shots(self) -> int:
        return self.executions * self.shots

    @property
    def qpu_seconds(self) -> float:
        return self.total_shots * SECONDS_PER_SHOT

    def figures(self) -> str:
        """How the shots add up: (points x training samples + test samples) x shots."""
        fewest = " (at least)" if not self.samples.exact else ""
        return (
            f"({self.points:,} points in {self.iterations:,} iterations x {self.samples.train:,} training samples"
            f"{fewest} + {self.samples.test:,} test samples) x {self.shots:,} shots"
        )


def estimate(spec: QuantumModelSpec, found: Samples | None = None) -> Estimate:
    """The most a training of ``spec`` runs (``found``: the samples the loaded dataset really has)."""
    opt = spec.training.optimizer
    iterations = opt.max_iterations
    if opt.kind in GRADIENT_OPTIMIZERS:
        points = iterations * (2 * weight_count(spec) + 1)
    elif opt.kind is OptimizerKind.SPSA:
        calibration = SPSA_CALIBRATION_POINTS if opt.learning_rate is None else SPSA_POINTS
        points = (iterations - 1) * SPSA_POINTS + calibration
    else:
        points = iterations
    return Estimate(iterations, points, found or samples(spec.dataset), spec.training.shots)


def takes_shots(backend: str) -> bool:
    return backend != "local:statevector"  # the exact simulator ignores shots


def shots_problem(spec: QuantumModelSpec, found: Samples | None = None) -> str | None:
    """Why the training's shots, all jobs together, exceed what a training may take; or None."""
    if not takes_shots(spec.training.backend):
        return None
    plan = estimate(spec, found)
    if plan.total_shots <= MAX_TRAINING_SHOTS:
        return None
    return (
        f"the training would take {plan.total_shots:,} shots {plan.figures()}, over the "
        f"{MAX_TRAINING_SHOTS:,} one training may take: lower training.optimizer.maxIterations or training.shots"
    )


def qpu_estimate_problem(spec: QuantumModelSpec, found: Samples | None = None, used: float | None = None) -> str | None:
    """Why the training's estimated QPU time exceeds governance.qpuBudgetSeconds (less ``used``
    seconds already spent in the window, when known); None when within it, or no budget or no QPU applies."""
    budget = spec.governance.qpu_budget_seconds
    if budget is None or not spec.training.backend.startswith("ibm:"):
        return None
    plan = estimate(spec, found)
    if (used or 0.0) + plan.qpu_seconds <= budget:
        return None
    before = "" if used is None else f"; {used:.1f} s used before"
    return (
        f"governance.qpuBudgetSeconds: {budget:g} s per {spec.governance.budget_window_text}{before}; "
        "the training is estimated at "
        f"{plan.qpu_seconds:,.1f} s of QPU time: {plan.total_shots:,} shots {plan.figures()} at "
        f"{SECONDS_PER_SHOT * 1e6:g} µs a shot"
    )
