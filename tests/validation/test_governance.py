"""Governance rules: each one passes, fails or is skipped as its spec says; enforce blocks, audit warns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.api import QuantumModel
from controller.api.quantummodel import QuantumModelSpec, RuleOutcome
from controller.engine.governance import RULES, blocking, evaluate, evaluate_backend
from tests.api.specs import DELETE, changed, model, pipeline, to_yaml
from tests.validation.cli import qmlops, write

BASE = model()  # DESIGN's example: local:aer, internal data, gdpr, 2 approvers, requiredApprovals 1


def spec_of(obj: dict[str, Any]) -> QuantumModelSpec:
    return QuantumModel.model_validate(obj).spec


def outcomes(obj: dict[str, Any]) -> dict[str, RuleOutcome]:
    return {r.rule: r.result for r in evaluate(spec_of(obj)).results}


def with_(*changes: tuple[str, Any]) -> dict[str, Any]:
    obj = BASE
    for path, value in changes:
        obj = changed(obj, path, value)
    return obj


IBM = ("spec.training.backend", "ibm:ibm_kyiv")
ALLOW_IBM = ("spec.governance.allowedBackends", ["local:*", "ibm:*"])

CASES = [
    ("allowed-backends", with_(), "pass"),
    ("allowed-backends", with_(IBM), "fail"),
    ("allowed-backends", with_(("spec.governance.allowedBackends", DELETE)), "skip"),
    ("max-shots", with_(("spec.training.shots", 100000)), "pass"),
    ("max-shots", with_(("spec.training.shots", 100001)), "fail"),
    ("max-shots", with_(("spec.governance.maxShots", DELETE)), "skip"),
    ("model-card", with_(), "pass"),
    ("model-card", with_(("spec.modelCard.limitations", "  ")), "fail"),
    ("model-card", with_(("spec.modelCard", DELETE)), "fail"),
    ("model-card", with_(("spec.governance.requireModelCard", False)), "skip"),
    ("approvals", with_(), "pass"),
    ("approvals", with_(("spec.promotion.requiredApprovals", 0)), "skip"),
    ("data-classification", with_(("spec.governance.dataClassification", "confidential")), "pass"),
    ("data-classification", with_(("spec.governance.dataClassification", "restricted"), IBM, ALLOW_IBM), "fail"),
    ("data-classification", with_(IBM, ALLOW_IBM), "skip"),
    ("restricted-approvals", with_(("spec.governance.dataClassification", "restricted")), "pass"),
    (
        "restricted-approvals",
        with_(("spec.governance.dataClassification", "restricted"), ("spec.promotion.requiredApprovals", 0)),
        "fail",
    ),
    ("restricted-approvals", with_(), "skip"),
    ("gdpr-retention", with_(), "pass"),
    ("gdpr-retention", with_(("spec.governance.retention", DELETE)), "fail"),
    ("gdpr-retention", with_(("spec.governance.compliance", [])), "skip"),
    ("gdpr-purpose", with_(), "pass"),
    (
        "gdpr-purpose",
        with_(("spec.modelCard.intendedUse", DELETE), ("spec.governance.requireModelCard", False)),
        "fail",
    ),
    ("hipaa-classification", with_(("spec.governance.compliance", ["hipaa"])), "fail"),
    (
        "hipaa-classification",
        with_(("spec.governance.compliance", ["hipaa"]), ("spec.governance.dataClassification", "restricted")),
        "pass",
    ),
    ("hipaa-backend", with_(("spec.governance.compliance", ["hipaa"])), "pass"),
    ("hipaa-backend", with_(("spec.governance.compliance", ["hipaa"]), IBM, ALLOW_IBM), "fail"),
    ("hipaa-backend", with_(IBM, ALLOW_IBM), "skip"),
    ("soc2-approvals", with_(("spec.governance.compliance", ["soc2"])), "pass"),
    (
        "soc2-approvals",
        with_(("spec.governance.compliance", ["soc2"]), ("spec.promotion.requiredApprovals", 0)),
        "fail",
    ),
    (
        "soc2-approvers",
        with_(
            ("spec.governance.compliance", ["soc2"]),
            ("spec.promotion.requiredApprovals", 0),
            ("spec.governance.approvers", []),
        ),
        "fail",
    ),
    ("soc2-approvers", with_(("spec.governance.compliance", ["soc2"])), "pass"),
    ("qpu-budget", with_(IBM, ALLOW_IBM), "pass"),
    ("qpu-budget", with_(IBM, ALLOW_IBM, ("spec.governance.qpuBudgetSeconds", DELETE)), "fail"),
    ("qpu-budget", with_(), "skip"),
    # (100 iterations x 80 samples + 20) x 1024 shots x 250 µs = 2,053 s against 600
    ("qpu-estimate", with_(IBM, ALLOW_IBM), "fail"),
    ("qpu-estimate", with_(IBM, ALLOW_IBM, ("spec.training.optimizer.maxIterations", 20)), "pass"),
    ("qpu-estimate", with_(IBM, ALLOW_IBM, ("spec.governance.qpuBudgetSeconds", DELETE)), "skip"),
    ("qpu-estimate", with_(), "skip"),
]


@pytest.mark.parametrize(("rule", "obj", "outcome"), CASES)
def test_each_rule(rule: str, obj: dict[str, Any], outcome: str) -> None:
    assert outcomes(obj)[rule] == RuleOutcome(outcome)


def test_the_report_lists_every_rule_with_a_summary() -> None:
    report = evaluate(spec_of(with_(IBM, ("spec.governance.qpuBudgetSeconds", DELETE))))
    assert [r.rule for r in report.results] == [r.id for r in RULES]
    assert {r.rule: r.field for r in report.results}["qpu-budget"] == "spec.governance.qpuBudgetSeconds"
    failed = sorted(r.rule for r in report.results if r.result is RuleOutcome.FAIL)
    assert failed == ["allowed-backends", "qpu-budget"]
    summary = report.summary
    assert (summary.fail, summary.pass_ + summary.skip + summary.warn) == (2, len(RULES) - 2)
    assert report.to_wire()["summary"]["fail"] == 2


def test_enforce_blocks_and_audit_does_not() -> None:
    enforced = spec_of(with_(IBM, ("spec.governance.qpuBudgetSeconds", DELETE)))
    assert [r.rule for r in blocking(evaluate(enforced), enforced)] == ["allowed-backends", "qpu-budget"]
    audited = spec_of(
        with_(IBM, ("spec.governance.qpuBudgetSeconds", DELETE), ("spec.governance.enforcement", "audit"))
    )
    report = evaluate(audited)
    assert report.summary.fail == 2  # still reported ...
    assert blocking(report, audited) == []  # ... but it blocks nothing


def test_a_pipeline_backend_is_judged_by_its_model() -> None:
    spec = spec_of(with_(("spec.governance.dataClassification", "confidential")))
    results = {r.rule: r.result for r in evaluate_backend(spec, "ibm:ibm_kyiv")}
    assert results["allowed-backends"] is RuleOutcome.FAIL
    assert results["data-classification"] is RuleOutcome.FAIL
    assert all(r.result is not RuleOutcome.FAIL for r in evaluate_backend(spec, "fake:manila"))


MODEL_YAML = to_yaml(with_(IBM, ("spec.governance.qpuBudgetSeconds", DELETE)))


def test_validate_reports_governance_at_the_blamed_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "m.yaml", MODEL_YAML)
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 1
    backend_line = 1 + MODEL_YAML.splitlines().index("    backend: ibm:ibm_kyiv")
    governance_line = 1 + MODEL_YAML.splitlines().index("  governance:")
    assert result.lines == [
        f"{spec}:{governance_line}:3: spec.governance.qpuBudgetSeconds: blocked by governance rule qpu-budget: "
        "ibm:ibm_kyiv spends QPU time: declare governance.qpuBudgetSeconds",
        f"{spec}:{backend_line}:14: spec.training.backend: blocked by governance rule allowed-backends: "
        "backend ibm:ibm_kyiv does not match governance.allowedBackends (local:*, fake:*)",
    ]
    json_out = qmlops(capsys, "validate", "-o", "json", str(spec)).json()
    assert [(p["rule"], p["severity"]) for p in json_out] == [("qpu-budget", "error"), ("allowed-backends", "error")]


def test_audit_reports_warnings_and_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, "m.yaml", MODEL_YAML.replace("enforcement: enforce", "enforcement: audit"))
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 0
    assert [line.split(": ", 1)[1] for line in result.lines] == [
        "spec.governance.qpuBudgetSeconds: warning: governance rule qpu-budget (audit): "
        "ibm:ibm_kyiv spends QPU time: declare governance.qpuBudgetSeconds",
        "spec.training.backend: warning: governance rule allowed-backends (audit): "
        "backend ibm:ibm_kyiv does not match governance.allowedBackends (local:*, fake:*)",
    ]
    assert "0 errors, 2 warnings" in result.err


def test_pipelines_obey_their_models_governance(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    confidential = changed(BASE, "spec.governance.dataClassification", "confidential")
    write(tmp_path, "m.yaml", to_yaml(confidential))
    pipe = changed(pipeline(), "spec.steps.1.evaluate.backends", ["fake:manila", "ibm:ibm_kyiv"])
    pipe = changed(pipe, "spec.steps.0.train.matrix", {"training.shots": [1000, 200000]})
    text = to_yaml(pipe)
    spec = write(tmp_path, "p.yaml", text)
    result = qmlops(capsys, "validate", str(tmp_path))
    assert result.code == 1
    lines = text.splitlines()
    shots_line = 1 + lines.index("        - 200000")
    ibm_line = 1 + lines.index("      - ibm:ibm_kyiv")
    assert result.lines == [
        f"{spec}:{shots_line}:11: spec.steps[0].train.matrix[training.shots][1]: blocked by governance rule "
        "max-shots: 200000 shots exceed governance.maxShots (100000)",
        f"{spec}:{ibm_line}:9: spec.steps[1].evaluate.backends[1]: blocked by governance rule allowed-backends: "
        "backend ibm:ibm_kyiv does not match governance.allowedBackends (local:*, fake:*)",
        f"{spec}:{ibm_line}:9: spec.steps[1].evaluate.backends[1]: blocked by governance rule data-classification: "
        "confidential data never leaves this machine: ibm:ibm_kyiv is not a local: or fake: backend",
    ]


def test_a_pipeline_cannot_sweep_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pipe = changed(pipeline(), "spec.steps.0.train.matrix", {"governance.enforcement": ["audit"]})
    spec = write(tmp_path, "p.yaml", to_yaml(pipe))
    result = qmlops(capsys, "validate", str(spec))
    assert result.code == 1
    assert result.lines[0].endswith(
        "spec.steps[0].train.matrix[governance.enforcement]: a pipeline cannot vary governance: "
        "it is the model's policy, changed by pull request"
    )


@pytest.mark.parametrize(
    ("where", "key", "value", "section"),
    [
        ("matrix", "governance.maxShots", [10], "governance"),
        ("matrix", "promotion.pin", [1], "promotion"),
        ("matrix", "training.credentialsSecret", ["someone-elses"], "training.credentialsSecret"),
        ("include", "promotion.beatChampionBy", 0.0, "promotion"),
        ("exclude", "governance.enforcement", "audit", "governance"),
    ],
)
def test_no_part_of_a_train_step_may_set_policy_or_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, key: str, value: Any, section: str
) -> None:
    entry = {key: value} if where == "matrix" else [{key: value}]
    located = f"[{key}]" if where == "matrix" else f"[0][{key}]"
    pipe = changed(pipeline(), f"spec.steps.0.train.{where}", entry)
    result = qmlops(capsys, "validate", str(write(tmp_path, "p.yaml", to_yaml(pipe))))
    assert result.code == 1
    assert any(
        line.endswith(
            f"spec.steps[0].train.{where}{located}: a pipeline cannot vary {section}: "
            "it is the model's policy, changed by pull request"
        )
        for line in result.lines
    ), result.lines


def test_an_included_cell_is_judged_by_the_models_governance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe = changed(pipeline(), "spec.steps.0.train.include", [{"training.backend": "ibm:ibm_kyiv"}])
    model_file = write(tmp_path, "m.yaml", to_yaml(BASE))
    result = qmlops(capsys, "validate", str(model_file), str(write(tmp_path, "p.yaml", to_yaml(pipe))))
    assert result.code == 1
    assert any(
        "spec.steps[0].train.include[0][training.backend]" in line and "allowed-backends" in line
        for line in result.lines
    ), result.lines


def test_two_pipelines_may_not_promote_one_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "m.yaml", to_yaml(BASE))
    write(tmp_path, "a.yaml", to_yaml(pipeline()))
    second = write(tmp_path, "b.yaml", to_yaml(changed(pipeline(), "metadata.name", "iris-weekly")))
    result = qmlops(capsys, "validate", str(tmp_path))
    assert result.code == 1
    assert any(
        line.startswith(f"{second}:")
        and "spec.steps[3].promote: QuantumPipeline team-quantum/iris-nightly" in line
        and "promotes model 'iris-vqc' already: one pipeline promotes a model" in line
        for line in result.lines
    ), result.lines


def test_a_pipeline_naming_a_model_the_repository_lacks_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "m.yaml", to_yaml(BASE))
    spec = write(tmp_path, "p.yaml", to_yaml(changed(pipeline(), "spec.model", "nope")))
    result = qmlops(capsys, "validate", str(tmp_path))
    assert result.code == 1
    assert any(line.startswith(f"{spec}:") and "spec.model: no QuantumModel 'nope'" in line for line in result.lines)
