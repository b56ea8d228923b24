"""Calibration in lineage: the device's calibration date and digest, the circuit's layout and ESP,
for fake: and ibm: trainings and evaluations; and where the calibration comes from."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from controller.engine.training import ModelArtifact, train
from controller.engine.training import calibration as calibrations
from controller.engine.training.calibration import CalibrationError, Footprint
from controller.engine.training.evaluation import evaluate
from tests.training import calibrations as files
from tests.training.specs import optimizer, tiny, write_iris_csv
from tests.training.standin import credentials_source, installed

ON_MANILA = {"backend": "fake:manila", "executionMode": "job", **optimizer("COBYLA", 2)}


@functools.cache
def repo() -> Path:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="calibration-")) / "repo"
    write_iris_csv(root / "data" / "iris01.csv", per_class=8)
    return root


@functools.cache
def trained_on_manila() -> ModelArtifact:
    return train(tiny(training=ON_MANILA), repo_root=repo())


def snapshot_of(model: ModelArtifact) -> dict:
    return dict(model.manifest["lineage"]["calibration"])


def test_a_fake_training_records_the_packaged_calibration_its_layout_and_esp() -> None:
    hardware = snapshot_of(trained_on_manila())
    packaged = calibrations.from_snapshot(files.packaged(), "packaged", "fake_manila", 5)
    assert hardware["device"] == "fake_manila"
    assert hardware["lastUpdate"] == files.packaged()["last_update_date"]
    assert hardware["digest"] == packaged.digest and hardware["source"] == "package"
    layout = hardware["layout"]
    assert len(layout["measured"]) == 2 and set(layout["measured"]) <= set(layout["qubits"])
    assert all(key.startswith(("sx:", "rz:", "x:", "cx:")) for key in layout["gates"])
    assert layout["couplers"] and all(len(pair) == 2 for pair in layout["couplers"])
    # an auditor recomputes the ESP from the snapshot and the layout alone
    assert hardware["esp"] == pytest.approx(packaged.esp(Footprint.from_json(layout)), abs=1e-6)
    assert 0.5 < hardware["esp"] < 1.0


def test_the_snapshot_is_kept_by_digest_for_the_registry() -> None:
    hardware = snapshot_of(trained_on_manila())
    found = calibrations.recall(hardware)
    assert found is not None and found.digest == hardware["digest"]
    assert json.loads(found.to_bytes()) == files.packaged()


def test_the_repository_calibration_replaces_the_packaged_one_for_training_and_evaluation(tmp_path: Path) -> None:
    repo_root = tmp_path / "repo"
    write_iris_csv(repo_root / "data" / "iris01.csv", per_class=8)
    worse = files.degraded(factor=3.0)
    files.write(repo_root, worse)
    model = train(tiny(training=ON_MANILA), repo_root=repo_root)
    hardware = snapshot_of(model)
    assert hardware["source"] == "calibrations/fake_manila.json"
    assert hardware["lastUpdate"] == "2026-12-01T06:00:00+00:00"
    assert hardware["esp"] < snapshot_of(trained_on_manila())["esp"] * 0.9
    # evaluation reads the same file, and the noise model is built from it
    champion = trained_on_manila()
    today = evaluate(champion, tiny(), "fake:manila", repo_root=repo_root)
    before = evaluate(champion, tiny(), "fake:manila", repo_root=repo())
    assert today.hardware is not None and today.hardware["digest"] == hardware["digest"]
    assert today.to_json()["lineage"]["calibration"]["esp"] < before.to_json()["lineage"]["calibration"]["esp"]
    assert today.metrics["loss"] != before.metrics["loss"]  # other noise, other figures
    # and a snapshot given explicitly wins (the champion replayed under the calibration it was trained on)
    again = evaluate(
        champion, tiny(), "fake:manila", repo_root=repo_root, calibration=calibrations.recall(snapshot_of(champion))
    )
    assert again.metrics == before.metrics


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["qubits"].pop(),
            r"calibrations/fake_manila\.json: qubits: fake_manila has 5 qubits, the file lists 4",
        ),
        (
            lambda d: d["qubits"][1][0].update(value=-3.0),
            r"calibrations/fake_manila\.json: qubits\[1\]\.T1: a duration cannot be negative",
        ),
        (
            lambda d: d["gates"][2]["parameters"][0].update(value=1.5),
            r"calibrations/fake_manila\.json: gates\[2\]\.gate_error: an error rate lies between 0 and 1",
        ),
        (
            lambda d: d.update(backend_name="ibm_kyiv"),
            r"calibrations/fake_manila\.json: backend_name: the file is for device fake_manila",
        ),
        (lambda d: d.pop("last_update_date"), r"calibrations/fake_manila\.json: last_update_date: an ISO 8601"),
        (
            lambda d: d["gates"][0].update(qubits=[9]),
            r"calibrations/fake_manila\.json: gates\[0\]\.qubits: qubit numbers of this device \(0 to 4\)",
        ),
    ],
)
def test_a_malformed_calibration_file_is_a_located_error_never_a_fallback(tmp_path: Path, change, message) -> None:
    repo_root = tmp_path / "repo"
    write_iris_csv(repo_root / "data" / "iris01.csv", per_class=8)
    data = files.packaged()
    change(data)
    files.write(repo_root, data)
    with pytest.raises(CalibrationError, match=message):
        evaluate(trained_on_manila(), tiny(), "fake:manila", repo_root=repo_root)


def test_a_file_that_is_not_json_names_the_file_and_the_position(tmp_path: Path) -> None:
    (tmp_path / "calibrations").mkdir()
    (tmp_path / "calibrations" / "fake_manila.json").write_text('{"backend_name": ')
    with pytest.raises(CalibrationError, match=r"calibrations/fake_manila\.json: not JSON \(JSONDecodeError at line 1"):
        calibrations.from_repository(tmp_path, "fake_manila", 5)


def test_an_ibm_training_records_the_services_current_calibration() -> None:
    read, _ = credentials_source()
    on_ibm = tiny(
        training={
            "backend": "ibm:fake_manila",
            "credentialsSecret": "ibm",
            "executionMode": "job",
            **optimizer("COBYLA", 1),
        }
    )
    with installed():
        model = train(on_ibm, repo_root=repo(), credentials=read)
    hardware = snapshot_of(model)
    assert hardware["device"] == "fake_manila" and hardware["source"] == "service"
    assert hardware["lastUpdate"].startswith("2024-05-27")
    assert 0.0 < hardware["esp"] < 1.0


def test_a_file_dataset_records_a_summary_of_its_training_data_never_its_rows() -> None:
    lineage = trained_on_manila().manifest["lineage"]
    summary = lineage["dataSummary"]
    assert set(summary["features"]) == {"petal_length", "petal_width"}
    assert summary["features"]["petal_length"]["count"] == 8
    assert len(summary["features"]["petal_length"]["values"]) == len(summary["quantiles"]) == 21
    assert "rows" not in json.dumps(summary) and "species" not in json.dumps(summary)
