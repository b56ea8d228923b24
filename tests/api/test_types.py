"""The resource types: the design contract's examples parse, and each constrained field refuses bad values
with a message that says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from controller.api import QuantumModel, QuantumPipeline
from tests.api.specs import DELETE, changed, model, pipeline

M, P = model(), pipeline()


def refused(obj: dict[str, Any]) -> str:
    kind = QuantumModel if obj["kind"] == "QuantumModel" else QuantumPipeline
    with pytest.raises(ValidationError) as err:
        kind.model_validate(obj)
    return str(err.value)


def test_design_examples_parse_and_round_trip() -> None:
    m = QuantumModel.model_validate(M)
    p = QuantumPipeline.model_validate(P)
    assert m.spec.training.backend == "local:aer" and m.spec.circuit.qubits == 4
    assert [s.name for s in p.spec.steps] == ["sweep", "noise-check", "pick", "promote"]
    assert QuantumModel.model_validate(m.to_wire()) == m
    assert QuantumPipeline.model_validate(p.to_wire()) == p


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("metadata.name", "iris"),
        ("metadata.name", "iris-vqc-2"),
        ("metadata.name", "a" * 63),
        ("spec.owner", "a.b+tag@sub.example.co"),
        ("spec.training.schedule", "@daily"),
        ("spec.training.schedule", "*/15 2-4 * * mon-fri"),
        ("spec.training.backend", "fake:kyiv"),
        ("spec.training.backend", "local:statevector"),
        ("spec.governance.allowedBackends", ["*", "ibm:ibm_*", "fake:*"]),
        ("spec.dataset.source", "builtin:wine"),
        ("spec.circuit.observable", "ZZZZ"),
        ("spec.promotion.requiredApprovals", 2),
    ],
)
def test_good_values_are_accepted(path: str, value: Any) -> None:
    QuantumModel.model_validate(changed(M, path, value))


def test_fake_device_names_are_normalised() -> None:
    spec = QuantumModel.model_validate(changed(M, "spec.training.backend", "fake:fake_manila")).spec
    assert spec.training.backend == "fake:manila"


def test_file_dataset_paths_are_normalised() -> None:
    obj = changed(changed(M, "spec.dataset.source", "file:./data//iris.csv"), "spec.dataset.target", "species")
    assert QuantumModel.model_validate(obj).spec.dataset.source == "file:data/iris.csv"


MODEL_REFUSALS = [
    # names
    ("metadata.name", "Iris", "DNS-1123"),
    ("metadata.name", "-iris", "DNS-1123"),
    ("metadata.name", "iris-", "DNS-1123"),
    ("metadata.name", "iris_vqc", "DNS-1123"),
    ("metadata.name", "a" * 64, "at most 63"),
    ("metadata.namespace", "Team", "DNS-1123"),
    ("spec.training.credentialsSecret", "IBM Token", "DNS-1123"),
    # emails
    ("spec.owner", "alice", "email"),
    ("spec.owner", "alice@", "email"),
    ("spec.owner", "@example.com", "email"),
    ("spec.owner", "alice@example", "email"),
    ("spec.owner", "a b@example.com", "email"),
    ("spec.governance.approvers", ["alice@example.com", "bob"], "email"),
    # cron
    ("spec.training.schedule", "0 3 * *", "5 fields"),
    ("spec.training.schedule", "61 3 * * *", "not a valid cron"),
    ("spec.training.schedule", "0 3 * * 9", "not a valid cron"),
    ("spec.training.schedule", "every night", "cron"),
    # backend references
    ("spec.training.backend", "local:gpu", "not a backend"),
    ("spec.training.backend", "fake:manilla", "has no device 'manilla'"),
    ("spec.training.backend", "fake:", "not a backend"),
    ("spec.training.backend", "ibm:", "not a backend"),
    ("spec.training.backend", "aws:braket", "not a backend"),
    ("spec.training.backend", "IBM:ibm_kyiv", "not a backend"),
    ("spec.training.backend", "local:aer ", "not a backend"),
    # backend globs
    ("spec.governance.allowedBackends", ["manila"], "not a backend pattern"),
    ("spec.governance.allowedBackends", ["local"], "not a backend pattern"),
    ("spec.governance.allowedBackends", ["local:AER"], "not a backend pattern"),
    ("spec.governance.allowedBackends", ["https://example.com"], "not a backend pattern"),
    ("spec.governance.allowedBackends", [], "at least 1"),
    # dataset sources and paths
    ("spec.dataset.source", "builtin:mnist", "unknown builtin dataset"),
    ("spec.dataset.source", "s3://bucket/data.csv", "not a dataset source"),
    ("spec.dataset.source", "file:/etc/passwd.csv", "absolute"),
    ("spec.dataset.source", "file:C:/data/x.csv", "absolute"),
    ("spec.dataset.source", "file:../secrets.csv", "leaves the repository"),
    ("spec.dataset.source", "file:data/../../x.csv", "leaves the repository"),
    ("spec.dataset.source", "file:data\\x.csv", "use '/'"),
    ("spec.dataset.source", "file:data/x.parquet", "not a CSV"),
    ("spec.dataset.source", "file:", "path is empty"),
    # ranges and enums
    ("spec.training.shots", 0, "greater than or equal to 1"),
    ("spec.training.shots", 10**9, "less than or equal to"),
    ("spec.training.shots", "many", "valid integer"),
    ("spec.dataset.testFraction", 1.0, "less than 1"),
    ("spec.circuit.qubits", 157, "less than or equal to 156"),
    ("spec.training.optimizer.maxIterations", 0, "greater than or equal to 1"),
    ("spec.promotion.beatChampionBy", 1.5, "less than or equal to 1"),
    ("spec.task", "regression", "classification"),
    ("spec.training.executionMode", "cluster", "'session', 'batch' or 'job'"),
    ("spec.governance.dataClassification", "secret", "'public'"),
    ("spec.governance.enforcement", "warn", "'enforce' or 'audit'"),
    ("spec.governance.compliance", ["pci"], "'gdpr'"),
    ("spec.circuit.observable", "ZZAZ", "should match pattern"),
    # unknown fields: a typo is an error, not ignored
    ("spec.traning", {}, "Extra inputs are not permitted"),
    ("metadata.nmae", "x", "Extra inputs are not permitted"),
    ("spec.training.token", "abc", "Extra inputs are not permitted"),
    ("apiVersion", "qmlops.io/v1", "qmlops.io/v1alpha1"),
    ("spec.owner", DELETE, "Field required"),
    ("spec.dataset", DELETE, "Field required"),
]


@pytest.mark.parametrize(("path", "value", "message"), MODEL_REFUSALS)
def test_bad_values_are_refused(path: str, value: Any, message: str) -> None:
    assert message in refused(changed(M, path, value))


CROSS_FIELD = [
    ("spec.dataset.reduce", DELETE, None, None, "5 features do not fit 4 qubits"),
    ("spec.dataset.reduce.components", 5, None, None, "dataset.reduce.components: 5 exceeds circuit.qubits (4)"),
    ("spec.promotion.requiredApprovals", 3, None, None, "3 approvals required but governance.approvers lists 2"),
    ("spec.governance.approvers", ["bob@example.com", "bob@example.com"], None, None, "duplicate approver"),
    ("spec.circuit.observable", "ZZ", None, None, "'ZZ' has 2 letters for 4 qubits"),
    ("spec.promotion.gates", [{"metric": "accuracy", "min": 0.9, "max": 0.5}], None, None, "min: 0.9 exceeds max"),
    ("spec.promotion.gates", [{"metric": "accuracy"}], None, None, "a gate needs min or max"),
    ("spec.training.backend", "ibm:ibm_kyiv", "spec.training.credentialsSecret", DELETE, "credentialsSecret"),
    ("spec.circuit.featureMap.paulis", ["ZZ"], None, None, "only a PauliFeatureMap takes paulis"),
    ("spec.dataset.classes", [0, 0], None, None, "classes: duplicate entries"),
    ("spec.dataset.source", "file:data/iris.csv", "spec.dataset.target", DELETE, "names its label column"),
    ("spec.circuit.ansatz.kind", "QASM", None, None, "carries its OpenQASM 3 program"),
    ("spec.circuit.ansatz.qasm", "OPENQASM 3.0;", None, None, "only an ansatz of kind QASM takes qasm"),
]


@pytest.mark.parametrize(("path", "value", "path2", "value2", "message"), CROSS_FIELD)
def test_cross_field_rules(path: str, value: Any, path2: str | None, value2: Any, message: str) -> None:
    # The DESIGN example lists 4 features plus reduce; one more feature makes "reduce" matter.
    obj = changed(M, "spec.dataset.features", ["a", "b", "c", "d", "e"])
    obj = changed(obj, path, value)
    if path2:
        obj = changed(obj, path2, value2)
    assert message in refused(obj)


GOOD_QASM = """OPENQASM 3.0;
include "stdgates.inc";
input float[64] a;
input float[64] b;
qubit[2] q;
ry(a) q[0];
cx q[0], q[1];
ry(b) q[1];
"""


def qasm_model(program: str, qubits: int = 2) -> dict[str, Any]:
    obj = changed(M, "spec.circuit", {"qubits": qubits, "ansatz": {"kind": "QASM", "qasm": program}})
    return changed(obj, "spec.dataset.reduce.components", qubits)


def test_qasm_ansatz_is_accepted_and_parsed_as_data() -> None:
    QuantumModel.model_validate(qasm_model(GOOD_QASM))


@pytest.mark.parametrize(
    ("program", "message"),
    [
        (GOOD_QASM.replace('"stdgates.inc"', '"/etc/passwd"'), "include '/etc/passwd' is not allowed"),
        (GOOD_QASM.replace('include "stdgates.inc";', 'include "stdgates.inc";\ninclude "mine.inc";'), "mine.inc"),
        (GOOD_QASM.replace("qubit[2] q;", "qubit[3] q;"), "uses 3 qubits, circuit.qubits is 2"),
        (GOOD_QASM + "bit[2] c;\nc = measure q;\n", "no measure, reset or classical bits"),
        (GOOD_QASM + "reset q[0];\n", "no measure, reset or classical bits"),
        (
            GOOD_QASM.replace("ry(a)", "ry(0.5)")
            .replace("ry(b)", "ry(0.1)")
            .replace("input float[64] a;\n", "")
            .replace("input float[64] b;\n", ""),
            "no trainable parameters",
        ),
        ("OPENQASM 3.0;\nqubit[2] q;\nfoo q[0];\n", "not a valid OpenQASM 3 program"),
        ("this is not qasm", "not a valid OpenQASM 3 program"),
    ],
)
def test_bad_qasm_ansatz_is_refused(program: str, message: str) -> None:
    assert message in refused(qasm_model(program))


PIPELINE_REFUSALS = [
    ("spec.steps.1.dependsOn", ["nope"], "steps.noise-check.dependsOn: no step named 'nope'"),
    ("spec.steps.1.dependsOn", ["noise-check"], "a step cannot depend on itself"),
    (
        "spec.steps.0.dependsOn",
        ["promote"],
        "dependsOn forms a cycle: sweep -> promote -> pick -> noise-check -> sweep",
    ),
    ("spec.steps.2.name", "sweep", "duplicate step name sweep"),
    ("spec.steps.3.select", {"metric": "f1"}, "exactly one of train, evaluate, select, promote"),
    ("spec.steps.3.promote", DELETE, "exactly one of train, evaluate, select, promote (found none)"),
    ("spec.steps", [], "at least 1"),
    ("spec.triggers.1.drift", {"threshold": 0.1}, "exactly one of gitChange, schedule, drift"),
    ("spec.triggers.1", {}, "found none"),
    ("spec.triggers.1.schedule", "0 2 * *", "5 fields"),
    ("spec.triggers.2.drift.threshold", 0, "greater than 0"),
    ("spec.triggers.2.drift.every", "sometimes", "duration"),
    ("spec.triggers.2.drift.backend", "fake:nowhere", "has no device 'nowhere'"),
    ("spec.triggers.0.gitChange.paths", ["../other/**"], "leaves the repository"),
    ("spec.triggers.0.gitChange.paths", ["/etc/**"], "absolute"),
    ("spec.steps.0.train.matrix", {"circuit.foo": [1]}, "circuit has no field 'foo'"),
    ("spec.steps.0.train.matrix", {"nothing.here": [1]}, "spec has no field 'nothing'"),
    ("spec.steps.0.train.matrix", {"circuit.ansatz": [1]}, "is a section, not a value"),
    ("spec.steps.0.train.matrix", {"circuit.ansatz.reps.x": [1]}, "is a value, it has no field 'x'"),
    # an item of a list is no spec path, whether the list may be absent or not
    ("spec.steps.0.train.matrix", {"training.resources.tolerations.key": ["a"]}, "tolerations is a value"),
    ("spec.steps.0.train.matrix", {"promotion.gates.metric": ["f1"]}, "gates is a value, it has no field 'metric'"),
    ("spec.steps.0.train.matrix", {"circuit.ansatz.reps": [1, 99]}, "99 is not valid there"),
    ("spec.steps.0.train.matrix", {"training.backend": ["fake:nowhere"]}, "is not valid there"),
    ("spec.steps.0.train.matrix", {"circuit.ansatz.reps": []}, "lists no values"),
    ("spec.steps.0.train.matrix", {"Circuit.reps": [1]}, "should match pattern"),
    ("spec.steps.0.train.parallelism", 0, "greater than or equal to 1"),
    ("spec.steps.1.evaluate.backends", ["fake:nowhere"], "has no device"),
    ("spec.model", "Iris", "DNS-1123"),
]


@pytest.mark.parametrize(("path", "value", "message"), PIPELINE_REFUSALS)
def test_bad_pipelines_are_refused(path: str, value: Any, message: str) -> None:
    assert message in refused(changed(P, path, value))
