"""Training one QuantumModel spec into a :class:`ModelArtifact`, resumably; and scoring an artifact."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from controller.api import limits
from controller.api.quantummodel import GRADIENT_OPTIMIZERS, QuantumModelSpec
from controller.engine.registry.canonical import digest_of
from controller.engine.training import artifact as artifacts
from controller.engine.training import backends, circuits, data, optimizers, summary
from controller.engine.training import calibration as calibrations
from controller.engine.training.artifact import ModelArtifact
from controller.engine.training.checkpoint import Checkpoint
from controller.engine.training.credentials import CredentialsSource
from controller.engine.training.errors import (
    BudgetExceeded,
    DatasetError,
    LimitExceeded,
    TrainingError,
    TrainingStopped,
)
from controller.engine.training.objective import Objective, Progress

PACKAGES = ("qmlops", "qiskit", "qiskit-aer", "qiskit-ibm-runtime", "numpy", "scipy", "scikit-learn")


def spec_digest(spec: QuantumModelSpec) -> str:
    """What a training depends on in the spec: data, circuit and training settings. Promotion,
    governance, the schedule, the timeout, the credentials' name and where it runs (resources) do not
    change what is trained."""
    training = spec.training.model_dump(
        mode="json", by_alias=True, exclude={"schedule", "credentials_secret", "timeout", "resources"}
    )
    parts = {
        "task": spec.task.value,
        "dataset": spec.dataset.model_dump(mode="json", by_alias=True),
        "circuit": spec.circuit.model_dump(mode="json", by_alias=True),
        "training": training,
    }
    return digest_of(parts)


def dataset_digest(spec: QuantumModelSpec, repo_root: Path | None = None) -> str:
    table = data.load(spec.dataset, repo_root, spec.circuit.qubits)
    return data.split(spec.dataset, table).digest(spec.dataset.source)


def train(
    spec: QuantumModelSpec,
    *,
    repo_root: Path | None = None,
    checkpoint_dir: Path | None = None,
    credentials: CredentialsSource = None,
    budget_used_seconds: float = 0.0,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.perf_counter,
) -> ModelArtifact:
    """Train ``spec`` on its backend, resuming from ``checkpoint_dir`` when it holds this very training.

    Raises :class:`TrainingStopped` when ``should_stop`` says so (the checkpoint is kept),
    :class:`TrainingTimedOut` once it has run ``training.timeout`` by ``clock``, and a
    :class:`TrainingError` with a message naming the spec field for anything the user must fix."""
    started = time.perf_counter()
    _check_qubits(spec)
    prepared = data.prepare(spec.dataset, repo_root, spec.circuit.qubits, spec.circuit.feature_map.kind.value)
    model = circuits.build(spec, prepared.x_train.shape[1], len(prepared.classes))
    if spec.training.optimizer.kind in GRADIENT_OPTIMIZERS:
        circuits.check_shift_rule(model)
    _check_shots(spec)
    _check_estimate(spec, prepared, budget_used_seconds)
    fingerprint = digest_of([spec_digest(spec), prepared.digest])
    checkpoint = Checkpoint.open(checkpoint_dir, fingerprint)
    target = backends.open_target(spec, credentials, checkpoint.session_id, sleep, repo_root=repo_root)
    try:
        isa, angles = target.executable(model.circuit, model.features, spec.training.seed)
        observables = target.layout_observables(isa, model.observables)
        objective = Objective(
            spec,
            model,
            target,
            isa,
            observables,
            prepared.x_train,
            prepared.split.y_train,
            checkpoint,
            budget_used_seconds=budget_used_seconds,
            on_progress=on_progress,
            should_stop=should_stop,
            angles=angles,
            clock=clock,
        )
        x0 = optimizers.initial_weights(len(model.weights), spec.training.seed)
        optimizers.minimize(objective, x0, spec.training.optimizer, spec.training.seed)
        weights = objective.weights
        evs = objective.test_evs(weights, prepared.x_test)
    except TrainingError as err:
        target.close()  # a training that failed for good pays no more for its session
        err.usage = {k: float(v) for k, v in checkpoint.usage().items()}  # what it spent counts against the budget
        raise
    except TrainingStopped as err:
        target.detach()  # the resume reattaches to the session while it is open
        err.usage = {k: float(v) for k, v in checkpoint.usage().items()}  # spent so far: recorded, counted once
        raise
    except BaseException:
        target.detach()  # stopped or crashed: the resume reattaches to the session while it is open
        raise
    target.close()
    metrics = artifacts.metrics(evs, prepared.split.y_test, len(prepared.classes))
    hardware = calibration_lineage(target, isa, checkpoint_dir)
    elapsed = time.perf_counter() - started
    return _artifact(spec, prepared, model, weights, metrics, objective, target, elapsed, hardware)


def calibration_lineage(target: backends.Target, isa: Any, keep_in: Path | None = None) -> dict[str, Any] | None:
    """``lineage.calibration`` of a circuit transpiled for a device: the calibration's date and digest,
    the circuit's layout and its ESP under that calibration. The snapshot is remembered by its digest
    (and kept in ``keep_in``, the training's checkpoint folder, until it is registered)."""
    used = target.calibration
    if used is None:
        return None
    calibrations.remember(used)
    if keep_in is not None:
        calibrations.keep(used, keep_in)
    return used.lineage(calibrations.footprint_of(isa))


def _check_qubits(spec: QuantumModelSpec) -> None:
    problem = limits.qubit_problem(spec.training.backend, spec.circuit.qubits)
    if problem is not None:
        raise LimitExceeded(f"circuit.qubits: {problem}")


def _check_estimate(spec: QuantumModelSpec, prepared: data.Prepared, used_seconds: float) -> None:
    """The whole training's shots and QPU time, from the samples the data really has, before any job."""
    found = limits.Samples(len(prepared.x_train), len(prepared.x_test), True)
    problem = limits.shots_problem(spec, found)
    if problem is not None:
        raise LimitExceeded(f"training: {problem}")
    problem = limits.qpu_estimate_problem(spec, found, used=used_seconds)
    if problem is not None:
        raise BudgetExceeded(f"{problem}; no job was started")


def _check_shots(spec: QuantumModelSpec) -> None:
    limit = spec.governance.max_shots
    if limit is not None and spec.training.shots > limit:
        raise BudgetExceeded(f"governance.maxShots: training.shots {spec.training.shots} exceeds {limit}")


def _artifact(
    spec: QuantumModelSpec,
    prepared: data.Prepared,
    model: circuits.ModelCircuit,
    weights: np.ndarray,
    metrics: dict[str, Any],
    objective: Objective,
    target: backends.Target,
    wall_seconds: float,
    hardware: dict[str, Any] | None = None,
) -> ModelArtifact:
    checkpoint = objective.checkpoint
    usage = {
        **checkpoint.usage(),
        "iterations": checkpoint.iteration,
        "wallSeconds": round(wall_seconds, 3),
        "iterationSeconds": round(checkpoint.totals.wall_seconds, 3),
        "runSeconds": round(checkpoint.totals.run_seconds, 3),
        "resumes": checkpoint.resumes,
    }
    body: dict[str, Any] = {
        "task": spec.task.value,
        "circuit": {
            **artifacts.encode_circuit(model.circuit),
            "qubits": spec.circuit.qubits,
            "features": model.features,
            "observables": model.observables,
            "readout": model.readout,
        },
        "weights": dict(zip(model.weights, (float(w) for w in weights), strict=True)),
        "preprocessing": prepared.preprocessing.to_json(),
        "classes": list(prepared.classes),
        "metrics": metrics,
        "lossCurve": [float(v) for v in _curve(objective)],
        "lineage": {
            "specDigest": spec_digest(spec),
            "datasetDigest": prepared.digest,
            "dataset": {
                "source": spec.dataset.source,
                "trainRows": len(prepared.split.y_train),
                "testRows": len(prepared.split.y_test),
            },
            "backend": spec.training.backend,
            "device": target.device,
            "executionMode": spec.training.execution_mode.value,
            "sessionId": checkpoint.session_id,
            "shots": spec.training.shots,
            "optimizer": spec.training.optimizer.model_dump(mode="json", by_alias=True, exclude_none=True),
            "seeds": {"dataset": spec.dataset.seed, "training": spec.training.seed},
            "run": checkpoint.run,
            "started": checkpoint.started,
            "packages": _packages(),
        },
        "usage": usage,
    }
    lineage = body["lineage"]
    if hardware is not None:
        lineage["calibration"] = hardware
    if spec.dataset.source.startswith("file:"):  # what data drift is measured against: never a row
        lineage["dataSummary"] = summary.summarize(prepared.split.x_train, prepared.split.features)
    return ModelArtifact.create(body)


def _curve(objective: Objective) -> list[float]:
    """One loss per iteration: the point each job was about (SPSA's and the gradient's centre)."""
    return [e.values[0] for e in objective.checkpoint.entries if e.kind != "test" and e.values]


def package_versions() -> dict[str, str]:
    """The versions of the packages a training depends on, as recorded in its lineage."""
    return dict(_installed_packages())


@functools.cache
def _installed_packages() -> tuple[tuple[str, str], ...]:
    return tuple(_packages().items())


def _packages() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def score(
    artifact: ModelArtifact | dict[str, Any], spec: QuantumModelSpec, repo_root: Path | None = None
) -> dict[str, Any]:
    """``artifact``'s metrics on ``spec``'s test split, on the exact simulator: how a champion is
    compared with a candidate trained on other data. The champion's own preprocessing applies."""
    model = artifact if isinstance(artifact, ModelArtifact) else ModelArtifact(dict(artifact))
    table = data.load(spec.dataset, repo_root, spec.circuit.qubits)
    split = data.split(spec.dataset, table)
    if [str(c) for c in model.classes] != [str(c) for c in split.classes]:
        raise DatasetError(f"dataset.classes: the champion knows classes {model.classes}, the spec {split.classes}")
    x_test = table.columns(model.preprocessing.features)[split.test_rows]
    evs = model.expectation_values(x_test)
    return artifacts.metrics(evs, split.y_test, len(model.classes))


def release(spec: QuantumModelSpec, checkpoint_dir: Path, credentials: CredentialsSource = None) -> bool:
    """Close the Runtime session of the training checkpointed in ``checkpoint_dir`` (on deletion: a
    stopped training leaves its session open so that a restart can reattach to it)."""
    from controller.engine.training.checkpoint import session_of

    return backends.release_session(spec, session_of(checkpoint_dir), credentials)
