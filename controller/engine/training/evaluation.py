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
from controller.engine.training.calibration import Calibration
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
    # lineage.calibration: device, lastUpdate, digest, layout and ESP of the circuit as it ran (fake:, ibm:)
    hardware: dict[str, Any] | None = None

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
        if self.hardware:
            out["lineage"] = {"calibration": self.hardware}
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
    calibration: Calibration | None = None,
) -> Evaluation:
    """``model`` scored on ``spec``'s test split on ``backend``. The model's own preprocessing applies;
    ``spec`` names the data and the governance whose shot and QPU limits hold (as for its training).

    A fake backend runs under ``calibration`` when given (monitoring replays a champion under the
    calibration it was trained on and under today's), else under the repository's
    ``calibrations/<device>.json`` (in ``repo_root``), else under its packaged snapshot."""
    artifact = model if isinstance(model, ModelArtifact) else ModelArtifact(dict(model))
    shots = shots or spec.training.shots
    governance = spec.governance
    if governance.max_shots is not None and shots > governance.max_shots:
        raise BudgetExceeded(f"governance.maxShots: evaluating with {shots} shots exceeds {governance.max_shots}")
    budget = governance.qpu_budget_seconds
    if budget is not None and backend.startswith("ibm:") and budget_used_seconds >= budget:
        raise BudgetExceeded(
            f"governance.qpuBudgetSeconds: {budget_used_seconds:.1f} of {budget} QPU seconds are spent; "
            f"evaluating on {backend} would spend more"
        )
    table = data.load(spec.dataset, repo_root, spec.circuit.qubits)
    split = data.split(spec.dataset, table)
    if [str(c) for c in artifact.classes] != [str(c) for c in split.classes]:
        raise DatasetError(f"dataset.classes: the model knows classes {artifact.classes}, the spec {split.classes}")
    preprocessing = artifact.preprocessing
    x_test = preprocessing.apply(table.columns(preprocessing.features)[split.test_rows])
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
    target = backends.open_target(on, credentials, repo_root=repo_root, calibration=calibration)
    try:
        isa, angles = target.executable(model_circuit.circuit, model_circuit.features, seed)
        observables = target.layout_observables(isa, model_circuit.observables)
        values = circuits.parameter_table(isa, x_test, weights, model_circuit, angles)
        job = target.run(isa, observables, values, shots, seed)
        hardware = calibration_lineage(target, isa)
    finally:
        target.close()
    metrics = artifacts.metrics(np.asarray(job.evs, dtype=float), split.y_test, len(artifact.classes))
    usage = {"qpuSeconds": job.qpu_seconds, "primitiveJobs": 1.0, "shots": float(job.shots)}
    return Evaluation(
        backend, target.device, metrics, shots, len(split.y_test), calibration_date(target), usage, hardware
    )


def calibration_lineage(target: backends.Target, isa: Any) -> dict[str, Any] | None:
    from controller.engine.training.trainer import calibration_lineage as lineage

    return lineage(target, isa)


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
