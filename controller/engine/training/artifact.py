"""The trained model as a portable, self-checking JSON document.

The circuit travels twice: as QPY (base64; what qmlops loads) and as OpenQASM 3 text (what other tools
read). Weights are keyed by parameter name because OpenQASM 3 loading reorders parameters. Loading
checks the size and the digest before anything else and never unpickles: QPY and JSON are data.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from controller.engine.registry.canonical import digest_of, pretty_bytes
from controller.engine.training import readout
from controller.engine.training.circuits import FEATURE_PREFIX
from controller.engine.training.data import Preprocessing
from controller.engine.training.errors import ArtifactError

API_VERSION = "artifact.qmlops.io/v1alpha1"
KIND = "TrainedModel"
MAX_ARTIFACT_BYTES = 16 * 1024 * 1024


def encode_circuit(circuit: Any) -> dict[str, Any]:
    from qiskit import qasm3, qpy

    buffer = io.BytesIO()
    qpy.dump(circuit, buffer)
    return {"qpy": base64.b64encode(buffer.getvalue()).decode("ascii"), "qasm3": qasm3.dumps(circuit)}


@dataclass(frozen=True)
class ModelArtifact:
    manifest: dict[str, Any]

    @classmethod
    def create(cls, body: dict[str, Any]) -> ModelArtifact:
        content = {"apiVersion": API_VERSION, "kind": KIND, **{k: v for k, v in body.items() if k != "digest"}}
        return cls({**content, "digest": digest_of(content)})

    @property
    def digest(self) -> str:
        return str(self.manifest["digest"])

    def to_json(self) -> bytes:
        return pretty_bytes(self.manifest)

    @classmethod
    def from_json(cls, raw: bytes, max_bytes: int = MAX_ARTIFACT_BYTES) -> ModelArtifact:
        if len(raw) > max_bytes:
            raise ArtifactError(f"the artifact is {len(raw)} bytes; the limit is {max_bytes}")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ArtifactError(f"the artifact is not JSON ({err})") from None
        if not isinstance(data, dict) or data.get("kind") != KIND or data.get("apiVersion") != API_VERSION:
            raise ArtifactError(f"not a {KIND} artifact of {API_VERSION}")
        expected = digest_of({k: v for k, v in data.items() if k != "digest"})
        if data.get("digest") != expected:
            raise ArtifactError(f"the artifact's content does not match its digest {str(data.get('digest'))[:19]}…")
        return cls(data)

    # --- what it holds --------------------------------------------------------------------------

    @property
    def classes(self) -> list[Any]:
        return list(self.manifest["classes"])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics") or {})

    @property
    def weights(self) -> dict[str, float]:
        return {str(k): float(v) for k, v in self.manifest["weights"].items()}

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_json(self.manifest["preprocessing"])

    def circuit(self) -> Any:
        from qiskit import qpy

        try:
            [circuit] = qpy.load(io.BytesIO(base64.b64decode(self.manifest["circuit"]["qpy"], validate=True)))
        except Exception as err:
            raise ArtifactError(f"the artifact's QPY circuit does not load: {type(err).__name__}") from None
        return circuit

    def observables(self) -> list[str]:
        return [str(o) for o in self.manifest["circuit"]["observables"]]

    # --- predicting -------------------------------------------------------------------------------

    def expectation_values(self, x_raw: np.ndarray, *, fast: bool = False) -> np.ndarray:
        """Exact expectation values (statevector) for raw rows of the artifact's input features, in one
        job: (rows,) for two classes, (classes, rows) for more. By default Qiskit's StatevectorEstimator,
        bit for bit what training measured; ``fast`` runs many rows on Aer's statevector instead (exact
        expectation values, equal to ~1e-15, several times faster: what serving uses)."""
        return self._exact.expectation_values(self.preprocessing.apply(np.asarray(x_raw, dtype=float)), fast=fast)

    def probabilities(self, x_raw: np.ndarray, *, fast: bool = False) -> np.ndarray:
        """Exact class probabilities for raw rows: (rows, classes), columns in the order of ``classes``."""
        return readout.probabilities(self.expectation_values(x_raw, fast=fast), len(self.classes))

    @cached_property
    def _exact(self) -> _ExactModel:
        """The circuit decoded once per loaded artifact (a server predicts with it many times)."""
        return _ExactModel.of(self)

    def predict_indices(self, x_raw: np.ndarray) -> np.ndarray:
        return readout.predict(self.expectation_values(x_raw), len(self.classes))

    def predict(self, x_raw: np.ndarray) -> list[Any]:
        return [self.classes[i] for i in self.predict_indices(x_raw)]


# Gates Aer runs as they are (a circuit of others goes to the StatevectorEstimator whatever its size).
AER_NATIVE = frozenset(
    {"h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "sxdg", "id", "barrier", "rx", "ry", "rz", "p", "u", "u1"}
    | {"u2", "u3", "cx", "cy", "cz", "cp", "crx", "cry", "crz", "swap", "rxx", "ryy", "rzz", "rzx", "ccx"}
)
AER_FROM_ROWS = 8  # below this, the StatevectorEstimator answers sooner (Aer's job costs ~10 ms)


@dataclass(frozen=True)
class _ExactModel:
    """A model's circuit, readout observable and parameter columns, ready for exact expectation values:
    Qiskit's StatevectorEstimator; or, ``fast`` and for many rows, Aer's statevector with exact
    expectation values (no shots: the same numbers to ~1e-15, several times faster) on the circuit with
    its weights bound and its feature angles computed once per row."""

    circuit: Any
    observable: Any
    feature_columns: list[tuple[int, int]]  # (parameter column, feature index)
    weight_values: np.ndarray  # every parameter's weight (zero where a feature goes)
    batch: Any = None  # weights bound, feature angles lifted; None when Aer cannot run the circuit as it is
    batch_model: Any = None
    angles: dict[str, Any] | None = None

    @classmethod
    def of(cls, artifact: ModelArtifact) -> _ExactModel:
        from qiskit.quantum_info import SparsePauliOp

        from controller.engine.training import circuits

        circuit = artifact.circuit()
        weights = artifact.weights
        feature_columns: list[tuple[int, int]] = []
        weight_values = np.zeros(circuit.num_parameters)
        for col, p in enumerate(circuit.parameters):
            if p.name.startswith(FEATURE_PREFIX) and p.name not in weights:
                feature_columns.append((col, int(p.name.removeprefix(FEATURE_PREFIX))))
            else:
                weight_values[col] = weights[p.name]
        ops = [SparsePauliOp(o) for o in artifact.observables()]
        observable: Any = ops[0]
        if len(ops) > 1:  # np.asarray(ops) would expand each SparsePauliOp into its matrix
            observable = np.empty((len(ops), 1), dtype=object)
            for k, op in enumerate(ops):
                observable[k, 0] = op
        batch = batch_model = angles = None
        if set(circuit.count_ops()) <= AER_NATIVE:
            features = [
                p.name for p in circuit.parameters if p.name.startswith(FEATURE_PREFIX) and p.name not in weights
            ]
            bound = circuit.assign_parameters({p: weights[p.name] for p in circuit.parameters if p.name in weights})
            batch, angles = circuits.lift_feature_angles(bound, features)
            ordered = [f"{FEATURE_PREFIX}{i}" for i in range(max((i for _, i in feature_columns), default=-1) + 1)]
            batch_model = circuits.ModelCircuit(batch, ordered, [], artifact.observables())
        return cls(circuit, observable, feature_columns, weight_values, batch, batch_model, angles)

    def expectation_values(self, features: np.ndarray, *, fast: bool = False) -> np.ndarray:
        if fast and self.batch is not None and features.shape[0] >= AER_FROM_ROWS:
            return self._on_aer(features)
        from qiskit.primitives import StatevectorEstimator

        values = np.tile(self.weight_values, (features.shape[0], 1))
        for col, index in self.feature_columns:
            values[:, col] = features[:, index]
        return np.asarray(StatevectorEstimator().run([(self.circuit, self.observable, values)]).result()[0].data.evs)

    def _on_aer(self, features: np.ndarray) -> np.ndarray:
        from qiskit_aer.primitives import EstimatorV2

        from controller.engine.training import circuits
        from controller.engine.training.backends import AER_OPTIONS

        values = circuits.parameter_table(self.batch, features, {}, self.batch_model, self.angles)
        estimator = EstimatorV2(options={"backend_options": dict(AER_OPTIONS)})  # precision 0: exact values
        return np.asarray(estimator.run([(self.batch, self.observable, values)]).result()[0].data.evs)


def metrics(evs: np.ndarray, y: np.ndarray, n_classes: int) -> dict[str, Any]:
    """Test-split metrics: accuracy, precision, recall, F1 (binary: of class 1; else macro), loss,
    and the confusion matrix (rows: true class, columns: predicted)."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    predicted = readout.predict(evs, n_classes)
    average = "binary" if n_classes == 2 else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, predicted, average=average, labels=list(range(n_classes)) if n_classes > 2 else None, zero_division=0
    )
    return {
        "accuracy": float(np.mean(predicted == y)),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "loss": float(readout.loss(evs, y, n_classes)),
        "confusionMatrix": confusion_matrix(y, predicted, labels=list(range(n_classes))).tolist(),
    }
