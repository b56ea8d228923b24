"""The optimizers, each driving an :class:`Objective` whose every call is one primitive job.

COBYLA, Nelder-Mead and L-BFGS-B are SciPy's; SPSA and Adam are written here because each of their
iterations must be one job (SPSA's two perturbations and the current point together; Adam's
parameter-shift gradient). All are deterministic given the seed and the values returned, which is
what lets a resumed training replay its journal.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

from controller.api.quantummodel import Optimizer, OptimizerKind
from controller.engine.training.objective import IterationLimit, Objective

SPSA_ALPHA, SPSA_GAMMA, SPSA_C = 0.602, 0.101, 0.2
SPSA_TARGET_STEP = 2 * math.pi / 10  # the first step's size, as qiskit-algorithms calibrates it
SPSA_CALIBRATION_DIRECTIONS = 5
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def initial_weights(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-math.pi, math.pi, count)


def minimize(objective: Objective, x0: np.ndarray, optimizer: Optimizer, seed: int) -> None:
    """Run ``optimizer`` until it converges or maxIterations jobs have run; the objective keeps the best point."""
    with contextlib.suppress(IterationLimit):
        _RUNNERS[optimizer.kind](objective, x0, optimizer, seed)


def _scipy(method: str):  # type: ignore[no-untyped-def]
    def run(objective: Objective, x0: np.ndarray, opt: Optimizer, seed: int) -> None:
        from scipy.optimize import minimize as scipy_minimize

        n = opt.max_iterations
        if method == "L-BFGS-B":
            scipy_minimize(
                objective.loss_and_gradient,
                x0,
                jac=True,
                method=method,
                tol=opt.tolerance,
                options={"maxfun": n, "maxiter": n},
            )
            return
        # COBYLA wants at least len(x0) + 2 evaluations; the objective stops at maxIterations anyway
        options = {"maxiter": max(n, len(x0) + 2)} if method == "COBYLA" else {"maxfev": n, "maxiter": n}
        scipy_minimize(objective.loss, x0, method=method, tol=opt.tolerance, options=options)

    return run


def _spsa(objective: Objective, x0: np.ndarray, opt: Optimizer, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.array(x0, dtype=float)
    a = opt.learning_rate or _spsa_calibrate(objective, x, rng)
    stability = 0.1 * opt.max_iterations
    for k in range(opt.max_iterations):
        ak = a / (k + 1 + stability) ** SPSA_ALPHA
        ck = SPSA_C / (k + 1) ** SPSA_GAMMA
        delta = rng.choice([-1.0, 1.0], size=x.shape)
        _, plus, minus = objective.losses(np.stack([x, x + ck * delta, x - ck * delta]))
        step = ak * (plus - minus) / (2 * ck) * delta
        if opt.tolerance is not None and np.linalg.norm(step) < opt.tolerance:
            return
        x = x - step


def _spsa_calibrate(objective: Objective, x: np.ndarray, rng: np.random.Generator) -> float:
    """The learning rate whose first step is SPSA_TARGET_STEP long, from a few random directions
    evaluated in one job (with the starting point, so the curve starts there)."""
    deltas = rng.choice([-1.0, 1.0], size=(SPSA_CALIBRATION_DIRECTIONS, x.size))
    points = [x] + [x + SPSA_C * d for d in deltas] + [x - SPSA_C * d for d in deltas]
    values = objective.losses(np.stack(points))
    plus, minus = values[1 : 1 + len(deltas)], values[1 + len(deltas) :]
    magnitude = float(np.mean(np.abs(plus - minus) / (2 * SPSA_C)))
    stability = 0.1 * objective.max_iterations
    return SPSA_TARGET_STEP * (1 + stability) ** SPSA_ALPHA / max(magnitude, 1e-6)


def _adam(objective: Objective, x0: np.ndarray, opt: Optimizer, seed: int) -> None:
    lr = opt.learning_rate or 0.1
    b1, b2 = ADAM_BETAS
    x = np.array(x0, dtype=float)
    m, v = np.zeros_like(x), np.zeros_like(x)
    for t in range(1, opt.max_iterations + 1):
        _, g = objective.loss_and_gradient(x)
        if opt.tolerance is not None and np.linalg.norm(g) < opt.tolerance:
            return
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + ADAM_EPS)


_RUNNERS = {
    OptimizerKind.COBYLA: _scipy("COBYLA"),
    OptimizerKind.NELDER_MEAD: _scipy("Nelder-Mead"),
    OptimizerKind.L_BFGS_B: _scipy("L-BFGS-B"),
    OptimizerKind.SPSA: _spsa,
    OptimizerKind.ADAM: _adam,
}
