"""The CEL rules in the CRDs, evaluated with cel-python: bad objects refused, good ones admitted.

Where the pydantic types enforce the same rule, they must refuse the same bad object: the apiserver and
``qmlops validate`` agree.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from controller.api import QuantumModel, QuantumPipeline
from controller.api.crd import crd_by_kind
from controller.api.quantumpolicy import QuantumPolicy
from tests.crds import objects
from tests.crds.objects import changed
from tests.support.schema import CelError, admit, cel_rules, compile_rule, evaluate_rule, version_schema

TYPES: dict[str, type[BaseModel]] = {
    "QuantumModel": QuantumModel,
    "QuantumPipeline": QuantumPipeline,
    "QuantumPolicy": QuantumPolicy,
}

M, P, Q = objects.model(), objects.pipeline(), objects.policy()

# (case, bad object, the CEL message expected, a fixed object, do the pydantic types refuse it too?)
CASES: list[tuple[str, dict[str, Any], str, dict[str, Any], bool]] = [
    (
        "more approvals than approvers",
        changed(M, spec__promotion__requiredApprovals=3),
        "promotion.requiredApprovals exceeds the approvers listed in governance.approvers",
        changed(M, spec__promotion__requiredApprovals=2),
        True,
    ),
    (
        "approvals without approvers",
        changed(M, spec__governance__approvers=None),
        "promotion.requiredApprovals exceeds the approvers listed in governance.approvers",
        changed(M, spec__governance__approvers=None, spec__promotion__requiredApprovals=0),
        True,
    ),
    (
        "shots above maxShots",
        changed(M, spec__training__shots=200_000),
        "training.shots exceeds governance.maxShots",
        changed(M, spec__training__shots=100_000),
        False,  # a governance rule: the engine checks it, not the types
    ),
    (
        "default shots above maxShots",
        changed(M, spec__training__shots=None, spec__governance__maxShots=100),
        "training.shots exceeds governance.maxShots",
        changed(M, spec__training__shots=None, spec__governance__maxShots=1024),
        False,
    ),
    (
        "shots above maxShots are admitted under enforcement: audit",
        changed(M, spec__training__shots=200_000),
        "training.shots exceeds governance.maxShots",
        changed(M, spec__training__shots=200_000, spec__governance__enforcement="audit"),
        False,
    ),
    (
        "more features than qubits",
        changed(M, spec__dataset__features=["a", "b", "c", "d", "e"]),
        "more features than qubits: set dataset.reduce or list fewer features",
        changed(
            M,
            spec__dataset__features=["a", "b", "c", "d", "e"],
            spec__dataset__reduce={"method": "pca", "components": 4},
        ),
        True,
    ),
    (
        "reduce to more components than qubits",
        changed(M, spec__dataset__reduce={"components": 5}),
        "dataset.reduce.components exceeds circuit.qubits",
        changed(M, spec__dataset__reduce={"components": 3}),
        True,
    ),
    (
        "gate without min or max",
        changed(M, spec__promotion__gates=[{"metric": "accuracy"}]),
        "a gate needs min or max",
        changed(M, spec__promotion__gates=[{"metric": "loss", "max": 0.4}]),
        True,
    ),
    (
        "gate with min above max",
        changed(M, spec__promotion__gates=[{"metric": "accuracy", "min": 0.9, "max": 0.5}]),
        "min must not exceed max",
        # 0 written as an integer: a number field is a double in CEL, and the comparison must still work
        changed(M, spec__promotion__gates=[{"metric": "accuracy", "min": 0, "max": 0.5}]),
        True,
    ),
    (
        "ibm backend without credentialsSecret",
        changed(M, spec__training__backend="ibm:ibm_kyiv"),
        "an ibm: backend needs credentialsSecret",
        changed(M, spec__training__backend="ibm:ibm_kyiv", spec__training__credentialsSecret="ibm-quantum"),
        True,
    ),
    (
        "file dataset without target",
        changed(M, spec__dataset__source="file:data/iris.csv"),
        "a file dataset needs target",
        changed(M, spec__dataset__source="file:data/iris.csv", spec__dataset__target="species"),
        True,
    ),
    (
        "QASM ansatz without qasm",
        changed(M, spec__circuit__ansatz={"kind": "QASM"}),
        "a QASM ansatz needs qasm",
        changed(M, spec__circuit__ansatz={"kind": "EfficientSU2"}),
        True,
    ),
    (
        "qasm on a RealAmplitudes ansatz",
        changed(M, spec__circuit__ansatz={"kind": "RealAmplitudes", "qasm": "OPENQASM 3.0;"}),
        "qasm is only for kind QASM",
        changed(M, spec__circuit__ansatz={"kind": "RealAmplitudes"}),
        True,
    ),
    (
        "Pauli observable of the wrong length",
        changed(M, spec__circuit__observable="ZZ"),
        "a Pauli observable has one letter per qubit",
        changed(M, spec__circuit__observable="ZZZZ"),
        True,
    ),
    (
        "model card required but missing",
        changed(M, spec__modelCard=None),
        "governance.requireModelCard: modelCard needs intendedUse and limitations",
        changed(M, spec__modelCard=None, spec__governance__requireModelCard=False),
        False,  # a governance rule
    ),
    (
        "trigger with two kinds",
        changed(P, spec__triggers=[{"schedule": "0 2 * * *", "gitChange": {"paths": ["specs/**"]}}]),
        "a trigger has exactly one of gitChange, schedule, drift",
        changed(P, spec__triggers=[{"drift": {"threshold": 0.05, "every": "6h"}}]),
        True,
    ),
    (
        "trigger with no kind",
        changed(P, spec__triggers=[{}]),
        "a trigger has exactly one of gitChange, schedule, drift",
        changed(P, spec__triggers=[]),
        True,
    ),
    (
        "step with no action",
        changed(P, spec__steps__2={"name": "promote", "dependsOn": ["pick"]}),
        "a step has exactly one of train, evaluate, select, promote",
        changed(P, spec__steps__2={"name": "promote", "dependsOn": ["pick"], "evaluate": {"backends": ["local:aer"]}}),
        True,
    ),
    (
        "step with two actions",
        changed(P, spec__steps__2={"name": "promote", "promote": {}, "select": {}}),
        "a step has exactly one of train, evaluate, select, promote",
        changed(P, spec__steps__2={"name": "promote", "dependsOn": ["pick"], "select": {}}),
        True,
    ),
    (
        "dependsOn names an unknown step",
        changed(P, spec__steps__1__dependsOn=["sweeep"]),
        "dependsOn names a step that does not exist",
        changed(P, spec__steps__1__dependsOn=["sweep"]),
        True,
    ),
    (
        "two steps with one name",
        changed(P, spec__steps__2__name="pick"),
        "step names are unique",
        changed(P, spec__steps__2__name="promote-it"),
        True,
    ),
    (
        "monitoring more often than once a minute",
        changed(M, spec__monitoring={"every": "30s", "onDrift": ["alert"]}),
        "monitoring.every must be at least 1m",
        changed(M, spec__monitoring={"every": "1m", "onDrift": ["alert"]}),
        True,
    ),
    (
        "monitoring every 90 minutes written as 1h30m",
        changed(M, spec__monitoring={"every": "0h0m59s"}),
        "monitoring.every must be at least 1m",
        changed(M, spec__monitoring={"every": "1h30m"}),
        True,
    ),
    (
        "a drift action listed twice",
        changed(M, spec__monitoring={"onDrift": ["retrain", "alert", "retrain"]}),
        "monitoring.onDrift lists an action twice",
        changed(M, spec__monitoring={"onDrift": ["retrain", "alert", "blockPromotion"]}),
        True,
    ),
    (
        "a floor asking for signed approvals without requiredApprovals",
        changed(Q, spec__floor__requiredApprovals=None),
        "a floor that asks for approvals needs requiredApprovals of at least 1",
        changed(
            Q,
            spec__floor__requiredApprovals=None,
            spec__floor__requireSignedApprovals=None,
            spec__floor__separationOfDuties=None,
            spec__floor__pinRequiresApproval=None,
        ),
        True,
    ),
    (
        "a floor asking for a pin's approval with requiredApprovals 0",
        changed(
            Q,
            spec__floor__requiredApprovals=0,
            spec__floor__requireSignedApprovals=False,
            spec__floor__separationOfDuties=False,
        ),
        "a floor that asks for approvals needs requiredApprovals of at least 1",
        changed(
            Q,
            spec__floor__requiredApprovals=0,
            spec__floor__requireSignedApprovals=False,
            spec__floor__separationOfDuties=False,
            spec__floor__pinRequiresApproval=False,
        ),
        True,
    ),
    (
        "a live check asking for more samples than its window holds",
        changed(M, spec__monitoring={"live": {"minSamples": 500, "window": 200}}),
        "monitoring.live.minSamples must not exceed its window",
        changed(M, spec__monitoring={"live": {"minSamples": 200, "window": 200}}),
        True,
    ),
]


def _problems(obj: dict[str, Any]) -> list[str]:
    _, problems = admit(obj, crd_by_kind(obj["kind"]))
    return problems


def test_the_valid_objects_are_admitted() -> None:
    for obj in (M, P, Q):
        assert _problems(obj) == []
        TYPES[obj["kind"]].model_validate(obj)


@pytest.mark.parametrize(("case", "bad", "message", "good", "types_refuse"), CASES, ids=[c[0] for c in CASES])
def test_rule_refuses_the_bad_object_and_admits_the_fixed_one(
    case: str, bad: dict[str, Any], message: str, good: dict[str, Any], types_refuse: bool
) -> None:
    problems = _problems(bad)
    assert any(p.endswith(": " + message) for p in problems), problems
    assert _problems(good) == [], case
    TYPES[good["kind"]].model_validate(good)
    if types_refuse:
        with pytest.raises(ValidationError):
            TYPES[bad["kind"]].model_validate(bad)


def test_every_rule_has_a_case() -> None:
    messages = {r.message for kind in TYPES for r in cel_rules(version_schema(crd_by_kind(kind)))}
    assert messages - {c[2] for c in CASES} == set()


def test_the_problem_names_the_field_the_rule_blames() -> None:
    problems = _problems(changed(M, spec__training__backend="ibm:ibm_kyiv"))
    assert "spec.training.credentialsSecret: an ibm: backend needs credentialsSecret" in problems
    problems = _problems(changed(P, spec__steps__1__select=None))
    assert "spec.steps[1]: a step has exactly one of train, evaluate, select, promote" in problems


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_every_rule_compiles(kind: str) -> None:
    rules = cel_rules(version_schema(crd_by_kind(kind)))
    assert rules
    for rule in rules:
        compile_rule(rule.rule)


def test_a_rule_that_does_not_compile_is_reported() -> None:
    with pytest.raises(CelError, match="does not compile"):
        compile_rule("self.steps.all(s, ")


def test_a_rule_that_cannot_be_evaluated_is_a_problem_not_a_pass() -> None:
    # A rule reading a field that is absent without has(): the apiserver refuses with an evaluation error.
    with pytest.raises(CelError, match="evaluation error"):
        evaluate_rule("self.missing == 1", {}, {"type": "object"})


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_every_field_path_names_a_field_of_the_schema(kind: str) -> None:
    for rule in cel_rules(version_schema(crd_by_kind(kind))):
        if rule.field_path is None:
            continue
        node = rule.node
        for part in rule.field_path.strip(".").split("."):
            assert part in node.get("properties", {}), f"{rule.path}: fieldPath {rule.field_path}"
            node = node["properties"][part]
