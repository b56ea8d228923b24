"""A model's compliance-pack results as a Kubernetes policy working group PolicyReport.

The shape is ``wgpolicyk8s.io/v1alpha2`` ``PolicyReport`` (what Kyverno and Policy Reporter write and
policy dashboards read): ``scope`` names the QuantumModel, ``results[]`` has one entry per rule of every
pack the model must pass (``policy`` the pack, ``rule``, ``result``, ``severity``, ``message``,
``properties`` with the controls, ``resources`` naming the model), ``summary`` counts the results.

The packs a model must pass are its effective ``governance.compliance``: the spec's regimes and the
packs of the QuantumPolicies that match it (:func:`controller.engine.policy.effective` adds them). A
failed rule is ``fail`` when the model's effective enforcement is ``enforce`` and ``warn`` under
``audit`` (reported, not enforced); ``error`` when the registry could not be read; ``skip`` when the
rule does not apply yet (no version in production). The report carries no time stamp, so the same
state gives the same bytes and ``registry/<ns>/<model>/policy.json`` is written only when it changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from controller.api.quantummodel import Enforcement, PackReportSummary, PolicySummary, QuantumModelSpec, RuleOutcome
from controller.api.quantumpipeline import QuantumPipeline
from controller.engine.packs import Subject, pack
from controller.engine.registry.store import Registry

API_VERSION = "wgpolicyk8s.io/v1alpha2"
KIND = "PolicyReport"
SOURCE = "qmlops"
OUTCOMES = ("pass", "fail", "warn", "error", "skip")
POLICY_FILE = "policy.json"
NO_PACK = "no compliance pack applies (governance.compliance and the matching QuantumPolicies name none)"
REMOVED = f"policy report removed: {NO_PACK}"


def required_packs(spec: QuantumModelSpec) -> list[str]:
    """The packs the (effective) spec must pass, once each, in the order declared."""
    return list(dict.fromkeys(spec.governance.compliance))


def _resource(namespace: str, name: str) -> dict[str, str]:
    return {"apiVersion": "qmlops.io/v1alpha1", "kind": "QuantumModel", "namespace": namespace, "name": name}


def build(
    namespace: str, name: str, spec: QuantumModelSpec, subject: Subject | None, problem: str = ""
) -> dict[str, Any]:
    """The report of ``spec``'s packs on ``subject`` (None: the registry could not be read, ``problem``
    says why, and every rule is ``error``)."""
    enforced = spec.governance.enforcement is Enforcement.ENFORCE
    results: list[dict[str, Any]] = []
    for pack_name in required_packs(spec):
        for rule in pack(pack_name).rules:
            if subject is None:
                outcome, message = RuleOutcome.ERROR, problem or "the registry could not be read"
            else:
                finding = rule.evaluate(subject)
                outcome, message = finding.outcome, finding.message
                if outcome is RuleOutcome.FAIL and not enforced:
                    outcome = RuleOutcome.WARN
            results.append(
                {
                    "source": SOURCE,
                    "policy": pack_name,
                    "rule": rule.id,
                    "category": pack(pack_name).title,
                    "result": outcome.value,
                    "severity": rule.severity.value,
                    "scored": True,
                    "message": message,
                    "properties": {
                        "controls": ", ".join(rule.controls),
                        "check": rule.check,
                        "enforcement": spec.governance.enforcement.value,
                    },
                    "resources": [_resource(namespace, name)],
                }
            )
    summary = {outcome: sum(1 for r in results if r["result"] == outcome) for outcome in OUTCOMES}
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": f"qmlops-{name}",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": SOURCE},
        },
        "scope": _resource(namespace, name),
        "results": results,
        "summary": summary,
    }


def enforced_failures(report: dict[str, Any]) -> list[str]:
    """``<pack>/<rule>`` of every rule that fails where it is enforced, or could not be checked (a rule
    the registry could not answer is not passed)."""
    bad = (RuleOutcome.FAIL.value, RuleOutcome.ERROR.value)
    return [f"{r['policy']}/{r['rule']}" for r in report["results"] if r["result"] in bad]


def summary_of(report: dict[str, Any]) -> PackReportSummary:
    """The short form kept in ``status.policy.report``."""
    failing = [
        f"{r['policy']}/{r['rule']}" for r in report["results"] if r["result"] in (RuleOutcome.FAIL, RuleOutcome.ERROR)
    ]
    return PackReportSummary(
        packs=list(dict.fromkeys(r["policy"] for r in report["results"])),
        summary=PolicySummary.model_validate(report["summary"]),
        failing=failing[:256],
    )


def render(report: dict[str, Any]) -> str:
    """The bytes of ``policy.json``: stable key order, one trailing newline."""
    return json.dumps(report, indent=2, ensure_ascii=False) + "\n"


def pipeline_backends(pipelines: Iterable[QuantumPipeline], namespace: str, name: str) -> tuple[str, ...]:
    """The backends the evaluate steps of the pipelines that train the model score on, once each."""
    found: list[str] = []
    for pipeline in pipelines:
        if (pipeline.metadata.namespace, pipeline.spec.model) != (namespace, name):
            continue
        for step in pipeline.spec.steps:
            if step.evaluate is not None:
                found += step.evaluate.backends
    return tuple(dict.fromkeys(found))


def report_for(
    registry: Registry, namespace: str, name: str, spec: QuantumModelSpec, backends: Sequence[str] = ()
) -> dict[str, Any]:
    """The report of the (effective) ``spec``'s packs on the model's registry: every version file and
    the whole ledger as they are (a registry that cannot be read makes every rule ``error``)."""
    try:
        subject = Subject(
            namespace,
            name,
            spec,
            registry.ledger(namespace, name),
            tuple(registry.versions(namespace, name)),
            tuple(backends),
        )
    except Exception as err:  # an unreadable ledger or version file: reported, never a crash; the report
        # goes to Git, so it names the kind of trouble and never quotes what the broken file holds
        problem = f"the registry cannot be read ({type(err).__name__}): qmlops audit --verify names the file"
        return build(namespace, name, spec, None, problem)
    return build(namespace, name, spec, subject)
