"""The trained model as a self-checking JSON document: QPY and OpenQASM 3, weights by name,
preprocessing, classes, metrics, loss curve, lineage, digest; loaded without pickle, predicting
exactly what training measured; re-scored on another spec's split."""

from __future__ import annotations

import base64
import json
import pickle
import re
from typing import Any

import numpy as np
import pytest

from controller.api.quantummodel import QuantumModelSpec
from controller.engine import training
from controller.engine.registry.canonical import digest_of
from controller.engine.training import data
from tests.training.specs import optimizer, spec

pytestmark = pytest.mark.slow

SPECS = {
    "binary": spec(
        circuit={"featureMap": {"kind": "ZZFeatureMap"}, "ansatz": {"reps": 2}}, training=optimizer("COBYLA", 8)
    ),
    "three-classes": spec(
        dataset={"classes": [0, 1, 2], "features": ["sepal_width", "petal_length", "petal_width"], "testFraction": 0.6},
        circuit={"qubits": 3, "featureMap": {"kind": "PauliFeatureMap", "paulis": ["Z", "YY"]}},
        training=optimizer("COBYLA", 4),
    ),
}


@pytest.fixture(scope="module", params=list(SPECS))
def trained(request: pytest.FixtureRequest) -> tuple[QuantumModelSpec, training.ModelArtifact]:
    s = SPECS[request.param]
    return s, training.train(s)


def test_manifest(trained: tuple[QuantumModelSpec, training.ModelArtifact]) -> None:
    s, artifact = trained
    m = json.loads(artifact.to_json())
    assert (m["apiVersion"], m["kind"], m["task"]) == ("artifact.qmlops.io/v1alpha1", "TrainedModel", "classification")
    assert base64.b64decode(m["circuit"]["qpy"]).startswith(b"QISKIT")
    assert m["circuit"]["qasm3"].startswith("OPENQASM 3.0;")
    assert m["circuit"]["qubits"] == s.circuit.qubits and m["circuit"]["features"] == [
        f"x_{i}" for i in range(len(s.dataset.features or []))
    ]
    assert set(m["weights"]) == {p.name for p in artifact.circuit().parameters} - set(m["circuit"]["features"])
    assert all(isinstance(v, float) for v in m["weights"].values())
    assert m["preprocessing"]["features"] == s.dataset.features
    assert m["classes"] == s.dataset.classes
    assert set(m["metrics"]) == {"accuracy", "precision", "recall", "f1", "loss", "confusionMatrix"}
    assert np.asarray(m["metrics"]["confusionMatrix"]).sum() == m["lineage"]["dataset"]["testRows"]
    assert len(m["lossCurve"]) == m["usage"]["iterations"] == s.training.optimizer.max_iterations
    lineage = m["lineage"]
    assert lineage["specDigest"] == training.spec_digest(s)
    assert lineage["datasetDigest"] == training.dataset_digest(s)
    assert lineage["seeds"] == {"dataset": s.dataset.seed, "training": s.training.seed}
    assert lineage["optimizer"]["kind"] == s.training.optimizer.kind.value
    assert {"qiskit", "qiskit-ibm-runtime", "numpy"} <= set(lineage["packages"])
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", m["digest"])
    assert m["digest"] == digest_of({k: v for k, v in m.items() if k != "digest"}) == artifact.digest


def test_loading_checks_size_and_digest_first(trained: tuple[QuantumModelSpec, training.ModelArtifact]) -> None:
    _, artifact = trained
    raw = artifact.to_json()
    assert training.ModelArtifact.from_json(raw).manifest == artifact.manifest

    tampered = json.loads(raw)
    name = sorted(tampered["weights"])[0]
    tampered["weights"][name] += 1e-9
    with pytest.raises(training.ArtifactError, match="the artifact's content does not match its digest sha256:"):
        training.ModelArtifact.from_json(json.dumps(tampered).encode())
    with pytest.raises(training.ArtifactError, match=rf"^the artifact is {len(raw)} bytes; the limit is 1000$"):
        training.ModelArtifact.from_json(raw, max_bytes=1000)
    with pytest.raises(training.ArtifactError, match="the limit is"):
        training.ModelArtifact.from_json(b"\x80" * 2000, max_bytes=1000)  # size before parsing
    with pytest.raises(training.ArtifactError, match="not JSON"):
        training.ModelArtifact.from_json(b"\x80not json")
    with pytest.raises(training.ArtifactError, match="not a TrainedModel artifact"):
        training.ModelArtifact.from_json(json.dumps({**json.loads(raw), "kind": "Other"}).encode())


def test_no_pickle_anywhere(
    trained: tuple[QuantumModelSpec, training.ModelArtifact], monkeypatch: pytest.MonkeyPatch
) -> None:
    s, artifact = trained

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    loaded = training.ModelArtifact.from_json(artifact.to_json())
    table = data.load(s.dataset, None, s.circuit.qubits)
    loaded.predict(table.columns(loaded.preprocessing.features)[:5])
    assert b"pickle" not in artifact.to_json().lower()


def raw_test_split(s: QuantumModelSpec) -> tuple[np.ndarray, np.ndarray]:
    split = data.split(s.dataset, data.load(s.dataset, None, s.circuit.qubits))
    return split.x_test, split.y_test


def test_predictions_reproduce_the_recorded_metrics(trained: tuple[QuantumModelSpec, training.ModelArtifact]) -> None:
    s, artifact = trained
    loaded = training.ModelArtifact.from_json(artifact.to_json())
    x_test, y_test = raw_test_split(s)
    predicted = loaded.predict_indices(x_test)
    assert float(np.mean(predicted == y_test)) == artifact.metrics["accuracy"]
    assert training.score(loaded, s) == artifact.metrics  # precision, recall, f1, loss and the matrix too
    assert loaded.predict(x_test[:3]) == [loaded.classes[i] for i in predicted[:3]]


def test_openqasm3_binds_by_name_to_the_same_expectation_values(
    trained: tuple[QuantumModelSpec, training.ModelArtifact],
) -> None:
    from qiskit import qasm3
    from qiskit.primitives import StatevectorEstimator
    from qiskit.quantum_info import SparsePauliOp

    s, artifact = trained
    circuit = qasm3.loads(artifact.manifest["circuit"]["qasm3"])
    x_test, _ = raw_test_split(s)
    features = artifact.preprocessing.apply(x_test)
    by_name = {**{n: np.full(len(x_test), w) for n, w in artifact.weights.items()}}
    by_name |= {f"x_{i}": features[:, i] for i in range(features.shape[1])}
    values = np.stack([by_name[p.name] for p in circuit.parameters], axis=-1)
    evs = [
        StatevectorEstimator().run([(circuit, SparsePauliOp(o), values)]).result()[0].data.evs
        for o in artifact.observables()
    ]
    expected = artifact.expectation_values(x_test)
    assert np.allclose(np.squeeze(np.asarray(evs)), np.squeeze(expected), atol=1e-12)


def test_score_on_another_split(trained: tuple[QuantumModelSpec, training.ModelArtifact]) -> None:
    s, artifact = trained
    other = s.model_copy(update={"dataset": s.dataset.model_copy(update={"seed": 1, "testFraction": 0.3})})
    scored = training.score(artifact.manifest, other)  # the registry hands over the manifest
    x_test, y_test = raw_test_split(other)
    assert np.asarray(scored["confusionMatrix"]).sum() == len(y_test)
    assert scored["accuracy"] == float(np.mean(artifact.predict_indices(x_test) == y_test))
    assert scored != artifact.metrics

    classes = list(reversed(s.dataset.classes or []))
    with pytest.raises(training.DatasetError, match=r"^dataset.classes: the champion knows classes"):
        training.score(artifact, s.model_copy(update={"dataset": s.dataset.model_copy(update={"classes": classes})}))


def test_fast_runs_many_rows_as_one_aer_job_with_the_statevectors_values(
    trained: tuple[QuantumModelSpec, training.ModelArtifact], monkeypatch: pytest.MonkeyPatch
) -> None:
    from qiskit_aer.primitives import EstimatorV2

    s, artifact = trained
    x_test, _ = raw_test_split(s)
    jobs: list[int] = []
    real = EstimatorV2.run

    def counted(self: EstimatorV2, pubs: list[Any], **kwargs: Any) -> Any:
        jobs.append(len(pubs))
        return real(self, pubs, **kwargs)

    monkeypatch.setattr(EstimatorV2, "run", counted)
    exact = artifact.expectation_values(x_test)
    assert jobs == [], "by default the StatevectorEstimator: what training measured, bit for bit"
    batch = artifact.expectation_values(x_test, fast=True)
    assert jobs == [1], "fast: the rows in one job on Aer's statevector"
    assert np.allclose(batch, exact, atol=1e-12)
    artifact.expectation_values(x_test[:1], fast=True)
    assert jobs == [1], "a single row goes to the StatevectorEstimator, sooner"
