"""Scoring a trained model on any backend: the exact statevector, Aer's shot noise, a fake device's
noise (its calibration snapshot, the circuit transpiled for it), or IBM hardware through the same
factory as training. One primitive job over the whole test split.

A pipeline's ``evaluate`` step scores every candidate with it, and monitoring replays the champion
under today's calibration with it: one function, so both see a model the same way.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from controller.api.quantummodel import ExecutionMode, QuantumModelSpec
from controller.engine.training import artifact as artifacts
from controller.engine.training import backends, circuits, data
from controller.engine.training.artifact import ModelArtifact
from controller.engine.training.credentials import CredentialsSource
from controller.engine.training.errors import BudgetExceeded, DatasetError


@dataclass(frozen=True)
class Evaluation:
    """A model's figures on one backend, and what the evaluation cost."""

    backend: str
    device: str
    metrics: dict[str, Any]
    shots: int
    rows: int
    calibration: str | None = None  # the device's calibration date (fake: its snapshot's; ibm: today's)
    usage: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "backend": self.backend,
            "device": self.device,
            "metrics": self.metrics,
            "shots": self.shots,
            "rows": self.rows,
            "usage": self.usage,
        }
        if self.calibration:
            out["calibration"] = self.calibration
        return out


def evaluate(
    model: ModelArtifact | dict[str, Any],
    spec: QuantumModelSpec,
    backend: str,
    *,
    shots: int | None = None,
    repo_root: Path | None = None,
    credentials: CredentialsSource = None,
    budget_used_seconds: float = 0.0,
) -> Evaluation:
    """``model`` scored on ``spec``'s test split on ``backend``. The model's own preprocessing applies;
    ``spec`` names the data and the governance whose shot and QPU limits hold (as for its training)."""
    artifact = model if isinstance(model, ModelArtifact) else ModelArtifact(dict(model))
    check_limits(spec, backend, shots or spec.training.shots, budget_used_seconds, "evaluating")
    table = data.load(spec.dataset, repo_root, spec.circuit.qubits)
    split = data.split(spec.dataset, table)
    if [str(c) for c in artifact.classes] != [str(c) for c in split.classes]:
        raise DatasetError(f"dataset.classes: the model knows classes {artifact.classes}, the spec {split.classes}")
    x_test = table.columns(artifact.preprocessing.features)[split.test_rows]
    run = run_rows(
        artifact,
        spec,
        backend,
        x_test,
        shots=shots,
        credentials=credentials,
        budget_used_seconds=budget_used_seconds,
        purpose="evaluating",
    )
    metrics = artifacts.metrics(run.evs, split.y_test, len(artifact.classes))
    return Evaluation(backend, run.device, metrics, run.shots, len(split.y_test), run.calibration, run.usage)


@dataclass(frozen=True)
class BackendRun:
    """The model's expectation values for some rows on one backend, in one primitive job."""

    evs: np.ndarray  # (rows,) for two classes, (classes, rows) for more
    device: str
    shots: int
    usage: dict[str, float]
    calibration: str | None = None


def check_limits(
    spec: QuantumModelSpec, backend: str, shots: int, budget_used_seconds: float = 0.0, purpose: str = "running"
) -> None:
    """The spec's governance on running its model: ``maxShots`` and, on IBM hardware, ``qpuBudgetSeconds``."""
    governance = spec.governance
    if governance.max_shots is not None and shots > governance.max_shots:
        raise BudgetExceeded(f"governance.maxShots: {purpose} with {shots} shots exceeds {governance.max_shots}")
    budget = governance.qpu_budget_seconds
    if budget is not None and backend.startswith("ibm:") and budget_used_seconds >= budget:
        raise BudgetExceeded(
            f"governance.qpuBudgetSeconds: {budget_used_seconds:.1f} of {budget} QPU seconds are spent; "
            f"{purpose} on {backend} would spend more"
        )


def run_rows(
    artifact: ModelArtifact,
    spec: QuantumModelSpec,
    backend: str,
    x_raw: np.ndarray,
    *,
    shots: int | None = None,
    credentials: CredentialsSource = None,
    budget_used_seconds: float = 0.0,
    purpose: str = "running",
) -> BackendRun:
    """The model's circuit run on ``backend`` for raw rows of its input features (its preprocessing
    applies), as one primitive job: the circuit transpiled for the backend, its observables laid out,
    one parameter row per input row. ``ibm:`` backends go through the runtime factory, within the
    spec's shot and QPU limits; ``spec`` also gives the seed and the credentials' Secret."""
    shots = shots or spec.training.shots
    check_limits(spec, backend, shots, budget_used_seconds, purpose)
    features = artifact.preprocessing.apply(np.asarray(x_raw, dtype=float))
    weights = artifact.weights
    circuit = artifact.circuit()
    model_circuit = circuits.ModelCircuit(
        circuit,
        [str(f) for f in artifact.manifest["circuit"]["features"]],
        [p.name for p in circuit.parameters if p.name in weights],
        artifact.observables(),
    )
    on = spec.model_copy(
        update={
            "training": spec.training.model_copy(
                update={"backend": backend, "execution_mode": ExecutionMode.JOB, "shots": shots}
            )
        }
    )
    seed = spec.training.seed
    target = backends.open_target(on, credentials)
    try:
        isa, angles = target.executable(model_circuit.circuit, model_circuit.features, seed)
        observables = target.layout_observables(isa, model_circuit.observables)
        values = circuits.parameter_table(isa, features, weights, model_circuit, angles)
        job = target.run(isa, observables, values, shots, seed)
    finally:
        target.close()
    usage = {"qpuSeconds": job.qpu_seconds, "primitiveJobs": 1.0, "shots": float(job.shots)}
    return BackendRun(np.asarray(job.evs, dtype=float), target.device, shots, usage, calibration_date(target))


def calibration_date(target: backends.Target) -> str | None:
    """When the device's calibration was taken (its properties' last update), as UTC ISO 8601."""
    device = getattr(target, "_backend", None)
    properties = None
    with contextlib.suppress(Exception):
        properties = device.properties() if device is not None else None
    moment = getattr(properties, "last_update_date", None)
    if not isinstance(moment, datetime):
        return None
    from controller.engine.registry.ledger import format_time

    return format_time(moment)
