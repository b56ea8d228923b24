"""The objective the optimizers minimise: every evaluation is exactly one primitive job.

All training samples go into one PUB whose parameter values broadcast over the samples; the points an
optimizer wants at once (SPSA's pair, a gradient's parameter-shift variants) are a leading axis of the
same PUB. Each job is journaled in the checkpoint before the optimizer sees its result, so a resumed
training replays finished jobs instead of paying for them again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.api import limits
from controller.api.quantummodel import QuantumModelSpec
from controller.engine.training import readout
from controller.engine.training.backends import Target
from controller.engine.training.checkpoint import Checkpoint, Entry
from controller.engine.training.circuits import ModelCircuit, parameter_table
from controller.engine.training.errors import BudgetExceeded, TrainingStopped, TrainingTimedOut

SHIFT = math.pi / 2


class IterationLimit(Exception):
    """training.optimizer.maxIterations jobs have run."""


@dataclass(frozen=True)
class Progress:
    """What a shell shows after each iteration."""

    run: str
    iteration: int
    max_iterations: int
    loss: float
    backend: str
    session_id: str | None
    started: str
    jobs: int
    shots: int
    qpu_seconds: float
    wall_seconds: float


class Objective:
    def __init__(
        self,
        spec: QuantumModelSpec,
        model: ModelCircuit,
        target: Target,
        isa: Any,
        observables: Any,
        x: np.ndarray,
        y: np.ndarray,
        checkpoint: Checkpoint,
        *,
        budget_used_seconds: float = 0.0,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        angles: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.spec, self.model, self.target = spec, model, target
        self.isa, self.observables, self.angles = isa, observables, angles
        self.x, self.y = x, y
        self.n_classes = 2 if len(model.observables) == 1 else len(model.observables)
        self.checkpoint = checkpoint
        self.budget_used = budget_used_seconds
        self.on_progress, self.should_stop = on_progress, should_stop
        self.max_iterations = spec.training.optimizer.max_iterations
        self.timeout = limits.timeout_seconds(spec.training)
        self.cursor = 0  # the next journal entry to replay
        self.clock = clock
        self._since = clock()  # when the last job ended: each entry's wall time runs from there
        self.best: tuple[float, np.ndarray] | None = None
        self.curve: list[float] = []
        self._base = parameter_table(isa, x, dict.fromkeys(model.weights, 0.0), model, angles)  # (N, P)
        order = [p.name for p in isa.parameters]
        self._weight_cols = [order.index(w) for w in model.weights]

    # --- what the optimizers call ---------------------------------------------------------------

    def losses(self, points: np.ndarray) -> np.ndarray:
        """The loss at each of ``points`` (m, W), in one job; the first point is the one the curve follows."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        entry = self._job("loss", points, lambda: self._evaluate_losses(points))
        values = np.asarray(entry.values)
        self._track(values[0], points[0])
        return values

    def loss(self, weights: np.ndarray) -> float:
        return float(self.losses(np.asarray(weights)[None, :])[0])

    def loss_and_gradient(self, weights: np.ndarray) -> tuple[float, np.ndarray]:
        """The loss and its parameter-shift gradient at ``weights``, in one job."""
        weights = np.asarray(weights, dtype=float)
        entry = self._job("gradient", weights[None, :], lambda: self._evaluate_gradient(weights))
        self._track(entry.values[0], weights)
        assert entry.gradient is not None
        return entry.values[0], np.asarray(entry.gradient)

    def test_evs(self, weights: np.ndarray, x_test: np.ndarray) -> np.ndarray:
        """Expectation values on the test split (one job, journaled like the others)."""
        table = parameter_table(self.isa, x_test, np.asarray(weights), self.model, self.angles)
        entry = self._job("test", np.asarray(weights)[None, :], lambda: self._evaluate_test(table), limit=False)
        return np.asarray(entry.evs, dtype=float)

    @property
    def weights(self) -> np.ndarray:
        assert self.best is not None, "no evaluation ran"
        return self.best[1]

    # --- one job, replayed or paid for ------------------------------------------------------------

    def _job(self, kind: str, points: np.ndarray, evaluate: Callable[[], Entry], limit: bool = True) -> Entry:
        replayed = self._replay(kind, points)
        if replayed is not None:
            self._since = self.clock()
            return replayed
        if limit and self.checkpoint.iteration >= self.max_iterations:
            raise IterationLimit
        if self.should_stop is not None and self.should_stop():
            raise TrainingStopped(f"stopped before iteration {self.checkpoint.iteration + 1}; the checkpoint is kept")
        if limit:  # the test split's job that ends a training always runs: no training times out at its end
            self._check_timeout()
        self._check_budget(reserve_test=kind != "test")
        entry = evaluate()
        entry.kind, entry.points = kind, points.tolist()
        entry.wall_seconds = self.clock() - self._since
        self.checkpoint.record(entry, self.target.session_id)
        self.cursor = len(self.checkpoint.entries)
        if kind != "test":
            self._report(entry)
        self._since = self.clock()
        return entry

    def _replay(self, kind: str, points: np.ndarray) -> Entry | None:
        entries = self.checkpoint.entries
        if self.cursor >= len(entries):
            return None
        entry = entries[self.cursor]
        if entry.kind == kind and np.array_equal(np.asarray(entry.points), points):
            self.cursor += 1
            return entry
        self.checkpoint.truncate(self.cursor)  # the journal no longer matches this optimizer: go on live from here
        return None

    def _check_timeout(self) -> None:
        """No job starts once the training has run training.timeout: its journaled jobs' wall time
        (earlier runs' included, so a restart does not reset the clock) and the time since the last."""
        elapsed = self.checkpoint.totals.wall_seconds + (self.clock() - self._since)
        if elapsed < self.timeout:
            return
        done = self.checkpoint.iteration
        raise TrainingTimedOut(
            f"training.timeout: the training has run {limits.format_seconds(elapsed)}, its timeout is "
            f"{self.spec.training.timeout}; stopped before iteration {done + 1} of {self.max_iterations}, the "
            f"checkpoint after iteration {done} is kept; raise training.timeout or lower "
            "training.optimizer.maxIterations to train again"
        )

    def _check_budget(self, reserve_test: bool) -> None:
        """No job starts that would break maxShots or the QPU budget. A training job also leaves room
        for the test-split job after it, so that a training never fails at its very end."""
        gov = self.spec.governance
        shots = self.spec.training.shots
        if gov.max_shots is not None and shots > gov.max_shots:
            raise BudgetExceeded(
                f"governance.maxShots: a job of {shots} shots exceeds {gov.max_shots}; no job was started"
            )
        if gov.qpu_budget_seconds is None or self.target.local:
            return
        spent = self.checkpoint.usage()["qpuSeconds"]
        next_job = self.checkpoint.totals.dearest_qpu_seconds
        needed = next_job * (2 if reserve_test else 1)
        used = self.budget_used + spent
        # nothing left, or not enough for a job like the dearest so far (the first job's cost is unknown)
        if used >= gov.qpu_budget_seconds or used + needed > gov.qpu_budget_seconds:
            raise BudgetExceeded(
                f"governance.qpuBudgetSeconds: {gov.qpu_budget_seconds:g} s per {gov.budget_window_text}; "
                f"{self.budget_used:.1f} s "
                f"used before and {spent:.1f} s by this training, the next job needs about {next_job:.1f} s"
                f"{' and as much again for the test split after it' if reserve_test else ''}; "
                f"stopped before iteration {self.checkpoint.iteration + 1}"
            )

    def _seed(self) -> int:
        return int(self.spec.training.seed) * 1_000_003 + len(self.checkpoint.entries)

    def _table(self, points: np.ndarray) -> np.ndarray:
        """(m, N, P): the samples' features with each point's weights."""
        values = np.repeat(self._base[None, :, :], len(points), axis=0)
        values[:, :, self._weight_cols] = points[:, None, :]
        return values

    def _run(self, values: np.ndarray) -> tuple[np.ndarray, Entry]:
        started = time.perf_counter()
        job = self.target.run(self.isa, self.observables, values, self.spec.training.shots, self._seed())
        entry = Entry("", [], [], job_id=job.job_id, qpu_seconds=job.qpu_seconds, shots=job.shots)
        entry.run_seconds = time.perf_counter() - started
        return job.evs, entry

    def _evaluate_losses(self, points: np.ndarray) -> Entry:
        evs, entry = self._run(self._table(points))
        entry.values = readout.loss(evs, self.y, self.n_classes).reshape(-1).tolist()
        return entry

    def _evaluate_gradient(self, weights: np.ndarray) -> Entry:
        n = len(weights)
        shifts = np.zeros((1 + 2 * n, n))
        shifts[1::2][np.arange(n), np.arange(n)] = SHIFT
        shifts[2::2][np.arange(n), np.arange(n)] = -SHIFT
        evs, entry = self._run(self._table(weights[None, :] + shifts))
        centre = evs[..., 0, :]
        shifted = evs[..., 1:, :].reshape((*evs.shape[:-2], n, 2, evs.shape[-1]))
        entry.values = [float(readout.loss(centre, self.y, self.n_classes))]
        entry.gradient = readout.loss_gradient(centre, shifted, self.y, self.n_classes).tolist()
        return entry

    def _evaluate_test(self, table: np.ndarray) -> Entry:
        evs, entry = self._run(table)
        entry.values, entry.evs = [], evs.tolist()
        return entry

    def _track(self, value: float, weights: np.ndarray) -> None:
        self.curve.append(float(value))
        if self.best is None or value < self.best[0]:
            self.best = (float(value), np.array(weights, dtype=float))

    def _report(self, entry: Entry) -> None:
        if self.on_progress is None:
            return
        usage = self.checkpoint.usage()
        self.on_progress(
            Progress(
                run=self.checkpoint.run,
                iteration=self.checkpoint.iteration,
                max_iterations=self.max_iterations,
                loss=entry.values[0] if entry.values else float("nan"),
                backend=self.spec.training.backend,
                session_id=self.checkpoint.session_id,
                started=self.checkpoint.started,
                jobs=usage["primitiveJobs"],
                shots=usage["shots"],
                qpu_seconds=usage["qpuSeconds"],
                wall_seconds=self.checkpoint.totals.wall_seconds,
            )
        )
