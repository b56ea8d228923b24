"""Every problem of every document, each at the line and column of the node it concerns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.engine.validation import validate_object
from tests.api.specs import changed, model
from tests.validation.cli import qmlops, write

MODEL = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumModel
metadata:
  name: iris-vqc
  namespace: team-quantum
spec:
  owner: alice@example.com
  dataset:
    source: builtin:iris
    features: [a, b, c, d]
  circuit:
    qubits: 4
  training:
    backend: local:aer
    shots: 1024
  promotion:
    gates:
      - {metric: accuracy, min: 0.85}
"""


def test_a_valid_spec_is_clean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "m.yaml", MODEL)
    result = qmlops(capsys, "validate", str(spec))
    assert (result.code, result.out) == (0, "")
    assert "1 file, 1 resource: clean" in result.err


def test_every_problem_is_reported_at_its_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        MODEL.replace("owner: alice@example.com", "owner: alice")
        .replace("  training:\n", "  traning:\n  training:\n")
        .replace("shots: 1024", "shots: -5")
        .replace("qubits: 4", "qubits: 4\n    observable: ZZ")
        .replace("min: 0.85}", "min: 0.85, max: 0.5}")
    )
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 1
    assert result.lines == [
        f"{spec}:7:10: spec.owner: 'alice' is not a valid email address",
        f"{spec}:13:17: spec.circuit.observable: 'ZZ' has 2 letters for 4 qubits",
        f"{spec}:14:3: spec.traning: unknown field 'traning' (did you mean 'training'?)",
        f"{spec}:17:12: spec.training.shots: must be at least 1",
        f"{spec}:20:33: spec.promotion.gates[0].min: 0.85 exceeds max 0.5",
    ]
    assert "5 errors, 0 warnings" in result.err


def test_an_unknown_field_in_a_list_item_is_told_the_fields_of_that_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = MODEL.replace("min: 0.85}", "min: 0.85, maxx: 1}").replace(
        "      - {metric: accuracy", "      - {metric: f1, above: 2}\n      - {metric: accuracy"
    )
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [
        f"{spec}:18:22: spec.promotion.gates[0].above: unknown field 'above' (fields here: metric, min, max)",
        f"{spec}:19:39: spec.promotion.gates[1].maxx: unknown field 'maxx' (did you mean 'max'?)",
    ]


def test_a_missing_field_points_at_its_parent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "m.yaml", MODEL.replace("    qubits: 4\n", "    observable: parity\n"))
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [f"{spec}:11:3: spec.circuit.qubits: required field is missing"]


def test_cross_field_problems_point_at_the_field_they_blame(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = MODEL.replace("[a, b, c, d]", "[a, b, c, d, e]").replace(
        "  promotion:\n", "  promotion:\n    requiredApprovals: 2\n"
    )
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [
        f"{spec}:10:5: spec.dataset.features: 5 features do not fit 4 qubits; "
        "set dataset.reduce or list fewer features",
        f"{spec}:17:24: spec.promotion.requiredApprovals: 2 approvals required but governance.approvers lists 0",
    ]


PIPELINE = """\
apiVersion: qmlops.io/v1alpha1
kind: QuantumPipeline
metadata: {name: nightly, namespace: team-quantum}
spec:
  model: iris-vqc
  steps:
    - name: sweep
      train:
        matrix:
          circuit.ansatz.reps: [1, 2]
          circuit.nope: [1]
    - name: check
      dependsOn: [sweep]
      evaluate: {backends: ["fake:manila"]}
"""


def test_pipeline_problems_point_into_steps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "p.yaml", PIPELINE)
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [
        f"{spec}:11:11: spec.steps[0].train.matrix[circuit.nope]: not a QuantumModel spec path: "
        "circuit has no field 'nope' (fields: qubits, featureMap, ansatz, observable)"
    ]
    spec = write(
        tmp_path,
        "p.yaml",
        PIPELINE.replace("circuit.nope: [1]", "training.shots: [10]").replace(
            "dependsOn: [sweep]", "dependsOn: [sweep, pick]"
        ),
    )
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [f"{spec}:13:7: spec.steps[1].dependsOn: no step named 'pick'"]


def test_union_errors_are_one_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "m.yaml", MODEL.replace("features: [a, b, c, d]", "classes: [0, {x: 1}]"))
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [f"{spec}:10:18: spec.dataset.classes[1]: must be an integer or a string (got a mapping)"]


def test_every_document_of_every_file_is_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(
        tmp_path, "a/one.yaml", MODEL + "---\n" + MODEL.replace("iris-vqc", "second").replace("shots: 1024", "shots: x")
    )
    write(tmp_path, "a/b/two.yml", MODEL.replace("iris-vqc", "third").replace("local:aer", "local:gpu"))
    write(tmp_path, "a/.hidden/skip.yaml", "not: a spec\n")
    write(tmp_path, "a/notes.txt", "not yaml: [\n")
    result = qmlops(capsys, "validate", str(tmp_path / "a"))
    assert result.code == 1
    assert result.lines == [
        f"{tmp_path}/a/b/two.yml:14:14: spec.training.backend: 'local:gpu' is not a backend: use local:aer, "
        "local:statevector, fake:<device>, ibm:<backend> or ibm:least-busy",
        f"{tmp_path}/a/one.yaml:34:12: spec.training.shots: must be an integer (got a string)",
    ]
    assert "2 files, 1 resource: 2 errors" in result.err


def test_documents_that_are_not_resources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        "kind: QuantumModle\napiVersion: qmlops.io/v1alpha1\n---\n- a list\n---\n"
        "metadata: {name: x}\n---\napiVersion: v1\nkind: ConfigMap\n---\nkind: [QuantumModel]\napiVersion: 3\n"
    )
    spec = write(tmp_path, "x.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 1
    assert result.lines == [
        f"{spec}:1:7: kind: unknown kind 'QuantumModle' (did you mean 'QuantumModel'?): "
        "qmlops.io has QuantumModel and QuantumPipeline",
        f"{spec}:4:1: a spec document is a mapping with apiVersion, kind, metadata and spec, not a list",
        f"{spec}:6:1: apiVersion: required field is missing: every resource states its apiVersion (qmlops.io/v1alpha1)",
        f"{spec}:6:1: kind: required field is missing: every resource states its kind (QuantumModel or QuantumPipeline)",
        f"{spec}:9:7: kind: warning: not a qmlops resource (apiVersion v1, kind ConfigMap): skipped",
        f"{spec}:11:1: kind: must be a string (got a list)",
        f"{spec}:12:13: apiVersion: must be a string (got an integer)",
    ]


def test_duplicates_and_unknown_models_across_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "m.yaml", MODEL)
    write(tmp_path, "m2.yaml", "# a copy\n" + MODEL)
    write(tmp_path, "p.yaml", PIPELINE.replace("circuit.nope: [1]", "training.shots: [10]").replace("iris-vqc", "iris"))
    result = qmlops(capsys, "validate", str(tmp_path))
    assert result.code == 1
    assert result.lines == [
        f"{tmp_path}/m2.yaml:5:9: metadata.name: duplicate QuantumModel team-quantum/iris-vqc: "
        f"also defined in {tmp_path}/m.yaml:4",
        f"{tmp_path}/p.yaml:5:10: spec.model: no QuantumModel 'iris' in namespace 'team-quantum' "
        "among the validated documents",
    ]


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "m.yaml", MODEL.replace("shots: 1024", "shots: 0"))
    result = qmlops(capsys, "validate", "--output", "json", str(spec))
    assert result.code == 1
    assert result.json() == [
        {
            "file": str(spec),
            "line": 15,
            "column": 12,
            "path": "spec.training.shots",
            "message": "must be at least 1",
            "severity": "error",
            "rule": None,
        }
    ]
    clean = qmlops(capsys, "validate", "-o", "json", str(write(tmp_path, "ok.yaml", MODEL.replace("iris-vqc", "ok"))))
    assert (clean.code, clean.json()) == (0, [])


def test_file_datasets_must_exist_with_their_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / ".git").mkdir()  # the repository root, where file: paths start
    write(tmp_path, "data/x.csv", "temp,load,label\n1,2,0\n")
    text = MODEL.replace("source: builtin:iris", "source: file:data/x.csv\n    target: lable").replace(
        "[a, b, c, d]", "[temp, lod]"
    )
    spec = write(tmp_path, "specs/m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [
        f"{spec}:10:13: spec.dataset.target: data/x.csv has no column 'lable' (did you mean 'label'?)",
        f"{spec}:11:22: spec.dataset.features[1]: data/x.csv has no column 'lod' (did you mean 'load'?)",
    ]
    spec = write(tmp_path, "specs/m.yaml", text.replace("x.csv", "y.csv"))
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [f"{spec}:9:13: spec.dataset.source: no file data/y.csv in the repository ({tmp_path})"]


def test_objects_from_the_kubernetes_api_have_no_positions() -> None:
    problems = validate_object(changed(model(), "spec.training.shots", 0), "team-quantum/iris-vqc")
    assert [p.format() for p in problems] == ["team-quantum/iris-vqc:0:0: spec.training.shots: must be at least 1"]
    assert validate_object(model(), "team-quantum/iris-vqc") == []


def test_the_console_script_in_a_subprocess(tmp_path: Path) -> None:
    bad = write(tmp_path, "m.yaml", MODEL.replace("qubits: 4", "qubits: four"))
    run = subprocess.run(
        [sys.executable, "-m", "controller", "validate", str(bad)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 1
    assert run.stdout == f"{bad}:12:13: spec.circuit.qubits: must be an integer (got a string)\n"
    assert run.stderr == "qmlops validate: 1 file, 0 resources: 1 error, 0 warnings\n"


def test_no_path_means_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "specs/m.yaml", MODEL.replace("shots: 1024", "shots: 0"))
    monkeypatch.chdir(tmp_path)
    result = qmlops(capsys, "validate")
    assert result.lines == ["specs/m.yaml:15:12: spec.training.shots: must be at least 1"]


def test_an_internal_error_is_one_line_and_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import controller.cli.validate as command

    def broken(paths: object, **options: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(command, "validate_paths", broken)
    result = qmlops(capsys, "validate", str(tmp_path))
    assert (result.code, result.out, result.err) == (2, "", "qmlops: internal error: RuntimeError: boom\n")


def test_types_are_checked_as_strictly_as_the_apiserver_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        MODEL.replace("qubits: 4", 'qubits: "4"')
        .replace("shots: 1024", "shots: 1.5")
        .replace("owner: alice@example.com", "owner: alice@example.com\n  suspend: yes")
    )
    spec = write(tmp_path, "m.yaml", text)
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [
        f"{spec}:8:12: spec.suspend: must be true or false (got a string)",
        f"{spec}:13:13: spec.circuit.qubits: must be an integer (got a string)",
        f"{spec}:16:12: spec.training.shots: must be an integer (got a number)",
    ]


def test_an_empty_value_points_at_its_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(
        tmp_path,
        "m.yaml",
        MODEL.replace("  dataset:\n    source: builtin:iris\n    features: [a, b, c, d]\n", "  dataset:\n"),
    )
    result = qmlops(capsys, "validate", str(spec))
    assert result.lines == [f"{spec}:8:3: spec.dataset: must be a mapping (got null)"]
