"""Putting a registered model to work: load a version (the champion by default) from the verified
registry, check the rows it is asked about, and predict class probabilities for them.

A version is read with its digest checked and its artifact checked again against its own digest (the
circuit is QPY, the weights JSON: nothing is unpickled). Rows are the model's raw input features, in
the order its preprocessing names them; every row of a request goes to the primitive in one job.
Problems with the input are :class:`InputError` whose message names the file or field, row and
column, never the value found there.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.api.common import backend_allowed
from controller.api.quantummodel import Enforcement, QuantumModelSpec
from controller.engine.registry.canonical import pretty_bytes
from controller.engine.registry.store import Registry, RegistryError
from controller.engine.training import readout
from controller.engine.training.artifact import ModelArtifact
from controller.engine.training.credentials import CredentialsSource
from controller.engine.training.errors import ArtifactError

MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_ROWS = 100_000
EXACT = "local:statevector"


class InputError(ValueError):
    """Rows that cannot be predicted on: the message names where (file or field, row, column)."""


class ModelUnavailable(LookupError):
    """The model or version asked for is not in the registry, or does not pass its checks."""


class BackendNotAllowed(ValueError):
    """The spec's governance does not allow running its model on that backend."""


class NoChampion(ModelUnavailable):
    """The model is registered but has no champion (nothing promoted yet)."""


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, checked, ready to predict."""

    namespace: str
    name: str
    version: int
    artifact: ModelArtifact
    registered_at: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def features(self) -> list[str]:
        return list(self.artifact.preprocessing.features)

    @property
    def classes(self) -> list[Any]:
        return self.artifact.classes


@dataclass(frozen=True)
class Predictions:
    """Class probabilities for each row (columns in the order of ``classes``) and the labels they give."""

    classes: list[Any]
    probabilities: np.ndarray  # (rows, classes)

    @property
    def indices(self) -> list[int]:
        return [int(i) for i in self.probabilities.argmax(axis=-1)]

    @property
    def labels(self) -> list[Any]:
        return [self.classes[i] for i in self.indices]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per row: its label and its probability per class (keyed by the class as text)."""
        names = [str(c) for c in self.classes]
        return [
            {"label": label, "probabilities": dict(zip(names, map(float, p), strict=True))}
            for label, p in zip(self.labels, self.probabilities, strict=True)
        ]


def load(registry: Registry, namespace: str, name: str, version: int | None = None) -> LoadedModel:
    """``version`` of the model (its champion when None), verified: the version file's digest (checked
    when the registry reads it), the artifact's own digest, and the one the version records for it."""
    model = f"{namespace}/{name}"
    try:
        if version is None:
            version = registry.ledger(namespace, name).champion()
            if version is None:
                known = (namespace, name) in registry.models()
                if not known:
                    raise ModelUnavailable(f"{model} is not in the registry")
                raise NoChampion(f"{model} has no champion: no version has been promoted")
        found = registry.version(namespace, name, version)
    except RegistryError as err:
        raise ModelUnavailable(str(err)) from None
    where = registry.version_path(namespace, name, version)
    if found is None:
        retired = registry.ledger(namespace, name, strict=False).retired().get(version)
        if retired is not None:  # its file left HEAD; history keeps it, nothing serves it
            raise ModelUnavailable(f"{model}: version {version} was retired ({retired.message}); it is not served")
        raise ModelUnavailable(f"{model} has no version {version}")
    try:
        artifact = ModelArtifact.from_json(pretty_bytes(found.artifact))
    except ArtifactError as err:
        raise ModelUnavailable(f"{where}: artifact: {err}") from None
    if found.artifact_digest and found.artifact_digest != artifact.digest:
        raise ModelUnavailable(f"{where}: the artifact's digest is not the artifactDigest the version records")
    return LoadedModel(namespace, name, version, artifact, found.registered_at)


def predict(model: LoadedModel, rows: np.ndarray) -> Predictions:
    """Exact (statevector) probabilities for checked raw rows, in one estimator job (many rows on Aer's
    statevector: see ``ModelArtifact.expectation_values``)."""
    return Predictions(model.classes, model.artifact.probabilities(rows, fast=True))


def predict_on(
    model: LoadedModel,
    spec: QuantumModelSpec,
    backend: str,
    rows: np.ndarray,
    *,
    shots: int | None = None,
    credentials: CredentialsSource = None,
) -> Predictions:
    """Probabilities with ``backend``'s noise (``local:aer``, ``fake:<device>``, ``ibm:<backend>`` within
    the spec's shot and QPU limits), the rows in one primitive job; the statevector is :func:`predict`."""
    if backend == EXACT:
        return predict(model, rows)
    patterns = spec.governance.allowed_backends
    enforced = spec.governance.enforcement is Enforcement.ENFORCE
    if enforced and patterns is not None and not backend_allowed(backend, patterns):
        raise BackendNotAllowed(
            f"governance.allowedBackends: {backend} does not match the spec's ({', '.join(patterns)})"
        )
    from controller.engine.training.evaluation import run_rows

    run = run_rows(model.artifact, spec, backend, rows, shots=shots, credentials=credentials, purpose="predicting")
    return Predictions(model.classes, readout.probabilities(run.evs, len(model.classes)))


def check_rows(values: Any, features: list[str], where: str) -> np.ndarray:
    """``values`` as a (rows, features) array of finite numbers, or :class:`InputError` naming ``where``,
    the row and the feature at fault."""
    try:
        x = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{where}: rows must be numbers") from None
    if x.ndim != 2 or x.shape[1] != len(features):
        shape = "x".join(str(n) for n in x.shape) or "a scalar"
        raise InputError(f"{where}: expected rows of {len(features)} features ({', '.join(features)}), got {shape}")
    if x.shape[0] == 0:
        raise InputError(f"{where}: no rows")
    if x.shape[0] > MAX_ROWS:
        raise InputError(f"{where}: {x.shape[0]} rows; the limit is {MAX_ROWS}")
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        row, col = (int(v) for v in bad[0])
        raise InputError(f"{where}: row {row}: {features[col]} is not a finite number")
    return x


def read_csv(raw: bytes, features: list[str], where: str) -> np.ndarray:
    """The ``features`` columns of a CSV with a header row (other columns ignored), checked."""
    if len(raw) > MAX_INPUT_BYTES:
        raise InputError(f"{where}: {len(raw)} bytes; the limit is {MAX_INPUT_BYTES}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{where}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise InputError(f"{where}: empty: expected a header row naming the columns {', '.join(features)}")
    names = [h.strip() for h in header]
    missing = [f for f in features if f not in names]
    if missing:
        raise InputError(f"{where}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    columns = [names.index(f) for f in features]
    rows: list[list[float]] = []
    for line, record in enumerate(reader, start=2):
        if not record or all(not cell.strip() for cell in record):
            continue
        if len(rows) >= MAX_ROWS:
            raise InputError(f"{where}: more than {MAX_ROWS} rows")
        row: list[float] = []
        for feature, col in zip(features, columns, strict=True):
            cell = record[col].strip() if col < len(record) else ""
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise InputError(f"{where}:{line}: column {feature}: not a finite number")
            row.append(value)
        rows.append(row)
    if not rows:
        raise InputError(f"{where}: no rows after the header")
    return np.asarray(rows, dtype=float)
