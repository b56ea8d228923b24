"""``qmlops predict``: the champion (or a version) of a registered model on the rows of a CSV file."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from controller.engine import prediction
from controller.engine.registry import Registry
from controller.engine.training.artifact import ModelArtifact
from tests.serving.conftest import MODEL
from tests.validation.cli import qmlops

pytestmark = pytest.mark.slow

ROWS = [[1.4, 0.2], [4.5, 1.5], [1.3, 0.3], [4.0, 1.2]]


def rows_csv(folder: Path, header: str = "id,petal_width,petal_length,note", rows: list[list[float]] = ROWS) -> Path:
    """The rows with the feature columns out of order, between columns the model does not read."""
    lines = [header] + [f"r{i},{w},{length},x" for i, (length, w) in enumerate(rows)]
    path = folder / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def artifact(work: Path, version: int) -> ModelArtifact:
    found = Registry(work, remote=None).version(*MODEL, version)
    assert found is not None
    return ModelArtifact(found.artifact)


def test_predicts_the_champion_as_the_artifact_does(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = qmlops(
        capsys, "predict", "demo/tiny", "--repo", str(work), "--input", str(rows_csv(tmp_path)), "--format", "json"
    )
    assert result.code == 0, result.err
    body = result.json()
    assert (body["model"], body["version"], body["backend"]) == ("demo/tiny", 2, "local:statevector")
    expected = artifact(work, 2)
    assert [p["label"] for p in body["predictions"]] == expected.predict(np.array(ROWS))
    probabilities = np.array([[p["probabilities"][str(c)] for c in expected.classes] for p in body["predictions"]])
    np.testing.assert_allclose(probabilities, expected.probabilities(np.array(ROWS)), atol=1e-12)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)


def test_a_version_by_number_as_a_table_and_as_csv(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table = qmlops(capsys, "predict", "tiny", "--repo", str(work), "--input", str(rows_csv(tmp_path)), "--version", "1")
    assert table.code == 0, table.err
    assert table.lines[0] == "demo/tiny version 1 on local:statevector"
    assert table.lines[1].split() == ["row", "label", "p(0)", "p(1)"]
    labels = artifact(work, 1).predict(np.array(ROWS))
    assert [line.split()[1] for line in table.lines[2:]] == [str(x) for x in labels]
    out = qmlops(
        capsys,
        "predict",
        "demo/tiny",
        "--repo",
        str(work),
        "--input",
        str(rows_csv(tmp_path)),
        "--version",
        "1",
        "--format",
        "csv",
    )
    parsed = list(csv.DictReader(io.StringIO(out.out)))
    assert [r["label"] for r in parsed] == [str(x) for x in labels]
    assert set(parsed[0]) == {"row", "label", "p_0", "p_1"}


def test_missing_feature_columns_are_named(work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = rows_csv(tmp_path, header="id,sepal_width,sepal_length,note")
    result = qmlops(capsys, "predict", "demo/tiny", "--repo", str(work), "--input", str(path))
    assert result.code == 2
    assert result.err.strip() == f"qmlops predict: {path}: missing columns petal_length, petal_width"


def test_a_cell_that_is_not_a_number_is_named_by_line_and_column_never_quoted(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("petal_length,petal_width\n1.4,0.2\n4.5,secret-value\n")
    result = qmlops(capsys, "predict", "demo/tiny", "--repo", str(work), "--input", str(path))
    assert result.code == 2
    assert result.err.strip() == f"qmlops predict: {path}:3: column petal_width: not a finite number"
    path.write_text("petal_length,petal_width\nnan,0.2\n")
    assert qmlops(capsys, "predict", "demo/tiny", "--repo", str(work), "--input", str(path)).code == 2


def test_a_model_without_champion_is_one_line_and_exit_1(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = work / "registry/demo/tiny/ledger.jsonl"
    kept = [
        line for line in ledger.read_text().splitlines() if json.loads(line)["kind"] not in ("promoted", "rolled-back")
    ]
    other = work / "registry/demo/fresh"
    (other / "versions").mkdir(parents=True)
    (other / "ledger.jsonl").write_text("\n".join(kept[:1]) + "\n")
    result = qmlops(capsys, "predict", "demo/fresh", "--repo", str(work), "--input", str(rows_csv(tmp_path)))
    assert (result.code, result.out) == (1, "")
    assert result.err == "qmlops predict: demo/fresh has no champion: no version has been promoted\n"
    unknown = qmlops(capsys, "predict", "demo/nope", "--repo", str(work), "--input", str(rows_csv(tmp_path)))
    assert (unknown.code, unknown.err) == (2, "qmlops predict: demo/nope is not in the registry\n")


def test_a_rewritten_version_is_refused_not_predicted(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = work / "registry/demo/tiny/versions/2.json"
    data = json.loads(path.read_text())
    name = next(iter(data["artifact"]["weights"]))
    data["artifact"]["weights"][name] += 0.5
    path.write_text(json.dumps(data))
    result = qmlops(capsys, "predict", "demo/tiny", "--repo", str(work), "--input", str(rows_csv(tmp_path)))
    assert result.code == 2
    assert "registry/demo/tiny/versions/2.json" in result.err and "digest" in result.err


def test_on_a_backend_the_rows_run_as_one_job_with_its_noise(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from qiskit_aer.primitives import EstimatorV2

    jobs: list[int] = []
    real = EstimatorV2.run

    def counted(self: EstimatorV2, pubs: list[object], **kwargs: object) -> object:
        jobs.append(len(pubs))
        return real(self, pubs, **kwargs)

    monkeypatch.setattr(EstimatorV2, "run", counted)
    result = qmlops(
        capsys,
        "predict",
        "demo/tiny",
        "--repo",
        str(work),
        "--input",
        str(rows_csv(tmp_path)),
        "--backend",
        "local:aer",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    assert jobs == [1], "every row in one primitive job"
    body = result.json()
    assert body["backend"] == "local:aer"
    noisy = np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in body["predictions"]])
    exact = artifact(work, 2).probabilities(np.array(ROWS))
    np.testing.assert_allclose(noisy, exact, atol=0.2)
    assert not np.allclose(noisy, exact, atol=1e-9), "shot noise, not the statevector"


def test_a_backend_run_keeps_the_specs_shot_limit(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rows_csv(tmp_path)
    spec = work / "specs/tiny.yaml"
    spec.write_text(spec.read_text().replace("  governance:\n", "  governance:\n    maxShots: 1000\n"))
    limited = qmlops(
        capsys,
        "predict",
        "demo/tiny",
        "--repo",
        str(work),
        "--input",
        str(path),
        "--backend",
        "local:aer",
        "--shots",
        "5000",
    )
    assert limited.code == 2
    assert limited.err.strip().endswith("governance.maxShots: predicting with 5000 shots exceeds 1000")


def test_read_csv_ignores_blank_lines_and_bounds_rows() -> None:
    rows = prediction.read_csv(b"a,b\n1,2\n\n3,4\n", ["b", "a"], "in.csv")
    np.testing.assert_array_equal(rows, [[2, 1], [4, 3]])
    with pytest.raises(prediction.InputError, match=r"^in.csv: no rows after the header$"):
        prediction.read_csv(b"a,b\n", ["a", "b"], "in.csv")


def test_a_backend_the_specs_governance_does_not_allow_is_refused(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = qmlops(
        capsys,
        "predict",
        "demo/tiny",
        "--repo",
        str(work),
        "--input",
        str(rows_csv(tmp_path)),
        "--backend",
        "fake:manila",
    )
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        "qmlops predict: governance.allowedBackends: fake:manila does not match the spec's (local:*)\n"
    )


def test_on_a_fake_device_the_rows_run_with_its_noise_through_the_runtime_path(
    work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = work / "specs/tiny.yaml"
    spec.write_text(spec.read_text().replace('allowedBackends: ["local:*"]', 'allowedBackends: ["local:*", "fake:*"]'))
    result = qmlops(
        capsys,
        "predict",
        "demo/tiny",
        "--repo",
        str(work),
        "--input",
        str(rows_csv(tmp_path)),
        "--backend",
        "fake:manila",
        "--format",
        "json",
    )
    assert result.code == 0, result.err
    noisy = np.array([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in result.json()["predictions"]])
    np.testing.assert_allclose(noisy, artifact(work, 2).probabilities(np.array(ROWS)), atol=0.3)
    np.testing.assert_allclose(noisy.sum(axis=1), 1.0)
