"""The governance rules a QuantumModel declares, evaluated into a policy report.

Each rule is a small function of the spec with an id, the field it blames and what it requires.
A rule that does not apply to a spec is skipped, not passed, so the report shows what was checked.
``enforcement: enforce`` makes failures block training and promotion; ``audit`` reports them only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller.api import limits
from controller.api.common import backend_allowed
from controller.api.quantummodel import (
    DataClassification,
    Enforcement,
    PolicyReport,
    PolicyResult,
    PolicySummary,
    QuantumModelSpec,
    RuleOutcome,
)

ON_MACHINE_BACKENDS = ("local:", "fake:")
PRIVATE_DATA = (DataClassification.CONFIDENTIAL, DataClassification.RESTRICTED)


@dataclass(frozen=True)
class Finding:
    outcome: RuleOutcome
    message: str


def _pass(message: str) -> Finding:
    return Finding(RuleOutcome.PASS, message)


def _fail(message: str) -> Finding:
    return Finding(RuleOutcome.FAIL, message)


def _skip(message: str) -> Finding:
    return Finding(RuleOutcome.SKIP, message)


@dataclass(frozen=True)
class Rule:
    id: str
    field: str
    requires: str
    check: Callable[[QuantumModelSpec], Finding]
    # Depends on training.backend: re-checked for every backend a pipeline evaluates on.
    about_backend: bool = False


# --- the rules -------------------------------------------------------------------------------------


def _allowed_backends(spec: QuantumModelSpec) -> Finding:
    patterns, backend = spec.governance.allowed_backends, spec.training.backend
    if patterns is None:
        return _skip("governance.allowedBackends is not declared")
    if backend_allowed(backend, patterns):
        return _pass(f"backend {backend} is allowed")
    return _fail(f"backend {backend} does not match governance.allowedBackends ({', '.join(patterns)})")


def _max_shots(spec: QuantumModelSpec) -> Finding:
    limit, shots = spec.governance.max_shots, spec.training.shots
    if limit is None:
        return _skip("governance.maxShots is not declared")
    if shots <= limit:
        return _pass(f"{shots} shots within governance.maxShots ({limit})")
    return _fail(f"{shots} shots exceed governance.maxShots ({limit})")


def _model_card(spec: QuantumModelSpec) -> Finding:
    if not spec.governance.require_model_card:
        return _skip("governance.requireModelCard is not set")
    card = spec.model_card
    missing = [
        name
        for name, text in (
            ("intendedUse", card.intended_use if card else None),
            ("limitations", card.limitations if card else None),
        )
        if not (text and text.strip())
    ]
    if missing:
        return _fail(f"governance.requireModelCard is set but modelCard lacks {' and '.join(missing)}")
    return _pass("modelCard states intendedUse and limitations")


def _approvals(spec: QuantumModelSpec) -> Finding:
    required, approvers = spec.promotion.required_approvals, set(spec.governance.approvers)
    if required == 0:
        return _skip("promotion.requiredApprovals is 0")
    if required <= len(approvers):
        return _pass(f"{required} approvals required from {len(approvers)} listed approvers")
    return _fail(f"{required} approvals required but governance.approvers lists {len(approvers)} distinct approvers")


def _data_stays_on_machine(spec: QuantumModelSpec) -> Finding:
    level, backend = spec.governance.data_classification, spec.training.backend
    if level not in PRIVATE_DATA:
        return _skip(f"{level.value} data may use any allowed backend")
    if backend.startswith(ON_MACHINE_BACKENDS):
        return _pass(f"{level.value} data stays on this machine ({backend})")
    return _fail(f"{level.value} data never leaves this machine: {backend} is not a local: or fake: backend")


def _restricted_needs_approval(spec: QuantumModelSpec) -> Finding:
    if spec.governance.data_classification is not DataClassification.RESTRICTED:
        return _skip("data is not restricted")
    if spec.promotion.required_approvals >= 1:
        return _pass("restricted data: promotion needs approval")
    return _fail("restricted data needs promotion.requiredApprovals of at least 1")


def _declares(spec: QuantumModelSpec, regime: str) -> bool:
    return regime in spec.governance.compliance


def _gdpr_retention(spec: QuantumModelSpec) -> Finding:
    if not _declares(spec, "gdpr"):
        return _skip("gdpr is not declared")
    if spec.governance.retention is not None:
        return _pass(f"keeps at most {spec.governance.retention.max_versions} versions")
    return _fail("gdpr (storage limitation): set governance.retention.maxVersions")


def _gdpr_purpose(spec: QuantumModelSpec) -> Finding:
    if not _declares(spec, "gdpr"):
        return _skip("gdpr is not declared")
    if spec.model_card and spec.model_card.intended_use and spec.model_card.intended_use.strip():
        return _pass("modelCard.intendedUse states the purpose")
    return _fail("gdpr (purpose limitation): state the purpose in modelCard.intendedUse")


def _hipaa_classification(spec: QuantumModelSpec) -> Finding:
    if not _declares(spec, "hipaa"):
        return _skip("hipaa is not declared")
    level = spec.governance.data_classification
    if level in PRIVATE_DATA:
        return _pass(f"data classified {level.value}")
    return _fail(f"hipaa: dataClassification must be confidential or restricted, not {level.value}")


def _hipaa_backend(spec: QuantumModelSpec) -> Finding:
    if not _declares(spec, "hipaa"):
        return _skip("hipaa is not declared")
    backend = spec.training.backend
    if backend.startswith("ibm:"):
        return _fail(f"hipaa: health data is not sent to IBM Quantum ({backend})")
    return _pass(f"{backend} keeps the data on this machine")


def _soc2_approvals(spec: QuantumModelSpec) -> Finding:
    if not _declares(spec, "soc2"):
        return _skip("soc2 is not declared")
    if spec.promotion.required_approvals >= 1:
        return _pass("promotion needs approval")
    return _fail("soc2 (change management): set promotion.requiredApprovals to at least 1")


def _soc2_approvers(spec: QuantumModelSpec) -> Finding:
    if not _declares(spec, "soc2"):
        return _skip("soc2 is not declared")
    if spec.governance.approvers:
        return _pass(f"{len(spec.governance.approvers)} approvers listed")
    return _fail("soc2 (change management): list who may approve in governance.approvers")


def _qpu_budget(spec: QuantumModelSpec) -> Finding:
    backend = spec.training.backend
    if not backend.startswith("ibm:"):
        return _skip(f"{backend} uses no QPU time")
    if spec.governance.qpu_budget_seconds is not None:
        gov = spec.governance
        return _pass(f"QPU budget {gov.qpu_budget_seconds:g} s per {gov.budget_window_text}")
    return _fail(f"{backend} spends QPU time: declare governance.qpuBudgetSeconds")


def _qpu_estimate(spec: QuantumModelSpec) -> Finding:
    budget, backend = spec.governance.qpu_budget_seconds, spec.training.backend
    if budget is None:
        return _skip("governance.qpuBudgetSeconds is not declared")
    if not backend.startswith("ibm:"):
        return _skip(f"{backend} uses no QPU time")
    problem = limits.qpu_estimate_problem(spec)
    if problem is not None:
        return _fail(problem)
    plan = limits.estimate(spec)
    at_least = "" if plan.samples.exact else " at least"
    return _pass(f"the training is estimated at{at_least} {plan.qpu_seconds:,.1f} s of QPU time, within {budget:g} s")


RULES: tuple[Rule, ...] = (
    Rule(
        "allowed-backends",
        "spec.training.backend",
        "training.backend matches a glob in governance.allowedBackends",
        _allowed_backends,
        about_backend=True,
    ),
    Rule("max-shots", "spec.training.shots", "training.shots is at most governance.maxShots", _max_shots),
    Rule(
        "model-card",
        "spec.modelCard",
        "with governance.requireModelCard, modelCard states intendedUse and limitations",
        _model_card,
    ),
    Rule(
        "approvals",
        "spec.promotion.requiredApprovals",
        "promotion.requiredApprovals is at most the distinct governance.approvers",
        _approvals,
    ),
    Rule(
        "data-classification",
        "spec.training.backend",
        "confidential and restricted data train only on local: and fake: backends",
        _data_stays_on_machine,
        about_backend=True,
    ),
    Rule(
        "restricted-approvals",
        "spec.promotion.requiredApprovals",
        "restricted data needs promotion.requiredApprovals of at least 1",
        _restricted_needs_approval,
    ),
    Rule(
        "gdpr-retention",
        "spec.governance.retention.maxVersions",
        "gdpr: governance.retention.maxVersions is set",
        _gdpr_retention,
    ),
    Rule("gdpr-purpose", "spec.modelCard.intendedUse", "gdpr: modelCard.intendedUse is stated", _gdpr_purpose),
    Rule(
        "hipaa-classification",
        "spec.governance.dataClassification",
        "hipaa: dataClassification is confidential or restricted",
        _hipaa_classification,
    ),
    Rule("hipaa-backend", "spec.training.backend", "hipaa: no ibm: backend", _hipaa_backend, about_backend=True),
    Rule(
        "soc2-approvals",
        "spec.promotion.requiredApprovals",
        "soc2: promotion.requiredApprovals is at least 1",
        _soc2_approvals,
    ),
    Rule("soc2-approvers", "spec.governance.approvers", "soc2: governance.approvers is not empty", _soc2_approvers),
    Rule(
        "qpu-budget",
        "spec.governance.qpuBudgetSeconds",
        "an ibm: backend comes with governance.qpuBudgetSeconds",
        _qpu_budget,
        about_backend=True,
    ),
    Rule(
        "qpu-estimate",
        "spec.training",
        "on an ibm: backend, the training's estimated QPU time (its shots x 250 µs) fits governance.qpuBudgetSeconds",
        _qpu_estimate,
    ),
)

RULES_BY_ID = {r.id: r for r in RULES}


# --- evaluation ------------------------------------------------------------------------------------


def _result(rule: Rule, finding: Finding) -> PolicyResult:
    return PolicyResult(rule=rule.id, result=finding.outcome, field=rule.field, message=finding.message)


def _report(results: list[PolicyResult]) -> PolicyReport:
    def count(outcome: RuleOutcome) -> int:
        return sum(1 for r in results if r.result is outcome)

    summary = PolicySummary.model_validate(
        {"pass": count(RuleOutcome.PASS), "fail": count(RuleOutcome.FAIL), "warn": count(RuleOutcome.WARN)}
        | {"error": count(RuleOutcome.ERROR), "skip": count(RuleOutcome.SKIP)}
    )
    return PolicyReport(results=results, summary=summary)


def evaluate(spec: QuantumModelSpec) -> PolicyReport:
    """Every rule's result for ``spec``, in the order of :data:`RULES`."""
    return _report([_result(rule, rule.check(spec)) for rule in RULES])


def evaluate_backend(spec: QuantumModelSpec, backend: str) -> list[PolicyResult]:
    """The backend rules as they would judge ``spec`` if it ran on ``backend`` (a pipeline's
    evaluate step or drift trigger runs the model there)."""
    moved = spec.model_copy(update={"training": spec.training.model_copy(update={"backend": backend})})
    return [_result(rule, rule.check(moved)) for rule in RULES if rule.about_backend]


def enforced(spec: QuantumModelSpec) -> bool:
    return spec.governance.enforcement is Enforcement.ENFORCE


def blocking(report: PolicyReport, spec: QuantumModelSpec) -> list[PolicyResult]:
    """The failed rules that stop training and promotion: all failures under ``enforce``, none under
    ``audit`` (where they are reported only)."""
    if not enforced(spec):
        return []
    return [r for r in report.results if r.result is RuleOutcome.FAIL]
