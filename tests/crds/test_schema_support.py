"""tests/support/schema.py, the apiserver stand-in the operator tests use: prune, default, validate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from controller.api import QuantumModelStatus, QuantumPipelineStatus
from controller.api.crd import crd_by_kind
from tests.crds import objects
from tests.crds.objects import changed
from tests.support.schema import admit, apply_defaults, prune, validate_against_crd, version_schema

SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _condition(type_: str) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True",
        "reason": "Done",
        "message": "ok",
        "observedGeneration": 2,
        "lastTransitionTime": NOW,
    }


def _version(n: int) -> dict[str, Any]:
    return {
        "version": n,
        "digest": DIGEST,
        "metrics": {"accuracy": 0.9},
        "commit": SHA,
        "backend": "fake:manila",
    }


MODEL_STATUS = QuantumModelStatus.model_validate(
    {
        "observedGeneration": 2,
        "phase": "Ready",
        "message": "champion v3",
        "conditions": [_condition("Ready"), _condition("Trained")],
        "source": {"repository": "git@x:y.git", "revision": f"main@sha1:{SHA}", "path": "specs/a.yaml", "author": "a"},
        "training": {
            "run": "r1",
            "iteration": 3,
            "maxIterations": 10,
            "loss": 0.5,
            "backend": "local:aer",
            "sessionId": "s1",
            "started": "2026-01-02T03:04:05Z",
            "job": "iris-vqc-train-0123456789abcdef",
        },
        "latestVersion": _version(3),
        "champion": _version(3),
        "usage": {"qpuSeconds": 1.5, "primitiveJobs": 2, "shots": 2048, "window": "30d"},
        "policy": {
            "results": [{"rule": "maxShots", "result": "pass", "field": "spec.training.shots", "message": "ok"}],
            "summary": {"pass": 1, "fail": 0, "warn": 0, "error": 0, "skip": 0},
            "floors": [{"field": "governance.maxShots", "value": "100000", "source": "QuantumPolicy/production-floor"}],
            "report": {
                "packs": ["gdpr"],
                "summary": {"pass": 2, "fail": 1, "warn": 0, "error": 0, "skip": 0},
                "failing": ["gdpr/storage-limitation"],
            },
        },
        "monitoring": {
            "lastCheck": "2026-01-02T03:04:05Z",
            "version": 3,
            "verdict": "drift",
            "esp": 0.61,
            "espAtTraining": 0.8,
            "replayAccuracy": 0.85,
            "liveAccuracy": 0.8,
            "liveSamples": 120,
            "championAccuracy": 0.9,
            "drifted": ["calibration"],
        },
        "lastHandledReconcileAt": "2026-01-02T03:04:05Z",
    }
)

PIPELINE_STATUS = QuantumPipelineStatus.model_validate(
    {
        "observedGeneration": 1,
        "phase": "Running",
        "message": "run 1",
        "conditions": [_condition("Ready")],
        "runs": [
            {
                "id": "run-1",
                "trigger": "schedule",
                "revision": f"main@sha1:{SHA}",
                "phase": "Running",
                "started": "2026-01-02T03:04:05Z",
                "finished": "2026-01-02T03:05:05Z",
                "steps": [{"name": "sweep", "phase": "Succeeded", "message": "2 versions", "outputs": {"v": "3"}}],
            }
        ],
        "lastHandledReconcileAt": "2026-01-02T03:04:05Z",
    }
)


def _unset_fields(model: BaseModel, path: str) -> list[str]:
    unset = [f"{path}.{n}" for n in type(model).model_fields if n not in model.model_fields_set]
    for name in model.model_fields_set:
        value = getattr(model, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                unset += _unset_fields(item, f"{path}.{name}")
    return unset


def test_the_sample_statuses_set_every_field() -> None:
    assert _unset_fields(MODEL_STATUS, "status") == []
    assert _unset_fields(PIPELINE_STATUS, "status") == []


def test_a_full_status_survives_the_apiserver_unchanged() -> None:
    for obj, status in ((objects.model(), MODEL_STATUS), (objects.pipeline(), PIPELINE_STATUS)):
        obj["status"] = status.to_wire()
        stored, problems = admit(obj, crd_by_kind(obj["kind"]))
        assert problems == []
        assert stored["status"] == obj["status"]


def test_prune_drops_unknown_fields_and_keeps_metadata() -> None:
    obj = changed(
        objects.model(),
        spec__traning={"shots": 5},
        spec__training__typo=1,
        metadata__labels={"a": "b"},
        status__champion={**_version(1), "secret": "x"},
    )
    schema = version_schema(crd_by_kind("QuantumModel"))
    pruned = prune(obj, schema)
    assert "traning" not in pruned["spec"] and "typo" not in pruned["spec"]["training"]
    assert "secret" not in pruned["status"]["champion"]
    assert pruned["metadata"] == obj["metadata"]
    assert pruned["status"]["champion"]["metrics"] == {"accuracy": 0.9}  # map values are declared


def test_prune_keeps_values_under_preserve_unknown_fields() -> None:
    obj = changed(objects.pipeline(), spec__steps__0__train__matrix={"training.shots": [1, "x", 2.5, True]})
    pruned = prune(obj, version_schema(crd_by_kind("QuantumPipeline")))
    assert pruned["spec"]["steps"][0]["train"]["matrix"] == {"training.shots": [1, "x", 2.5, True]}


def test_defaults_fill_sections_and_their_nested_fields() -> None:
    obj = changed(objects.model(), spec__training=None, spec__circuit={"qubits": 4})
    defaulted = apply_defaults(obj, version_schema(crd_by_kind("QuantumModel")))
    assert defaulted["spec"]["training"]["backend"] == "local:aer"
    assert defaulted["spec"]["training"]["optimizer"] == {"kind": "COBYLA", "maxIterations": 100}
    assert defaulted["spec"]["circuit"]["featureMap"]["kind"] == "ZZFeatureMap"
    assert "modelCard" in defaulted["spec"]  # set in the object: untouched
    assert obj["spec"].get("training") is None  # the input is not modified


def test_null_in_a_non_nullable_field_is_defaulted_or_dropped() -> None:
    obj = objects.model()
    obj["spec"]["description"] = None
    obj["spec"]["suspend"] = None
    defaulted = apply_defaults(obj, version_schema(crd_by_kind("QuantumModel")))
    assert "description" not in defaulted["spec"]
    assert defaulted["spec"]["suspend"] is False


def test_validation_reports_every_problem_with_its_path() -> None:
    obj = changed(
        objects.model(),
        spec__training__shots=0,
        spec__circuit__qubits="four",
        spec__owner=None,
        spec__training__backend="aws:braket",
    )
    problems = validate_against_crd(obj, crd_by_kind("QuantumModel"))
    assert any(p.startswith("spec.training.shots: 0 is less than the minimum of 1") for p in problems)
    assert any(p.startswith("spec.circuit.qubits: 'four' is not of type 'integer'") for p in problems)
    assert any(p.startswith("spec: 'owner' is a required property") for p in problems)
    assert any(p.startswith("spec.training.backend: 'aws:braket' does not match") for p in problems)


def _admit_problems(obj: dict[str, Any]) -> list[str]:
    return admit(obj, crd_by_kind(obj["kind"]))[1]


def test_exclusive_bounds_int_or_string_and_date_time() -> None:
    assert any("testFraction" in p for p in _admit_problems(changed(objects.model(), spec__dataset__testFraction=1.0)))
    assert _admit_problems(changed(objects.model(), spec__dataset__classes=["setosa", 1])) == []
    bad_classes = changed(objects.model(), spec__dataset__classes=[0.5, 1])
    assert any(p.startswith("spec.dataset.classes[0]") for p in _admit_problems(bad_classes))
    bad_time = changed(objects.model(), status__conditions=[{**_condition("Ready"), "lastTransitionTime": "yesterday"}])
    assert any("lastTransitionTime" in p for p in _admit_problems(bad_time))


def test_conditions_are_a_map_keyed_by_type() -> None:
    obj = changed(objects.model(), status__conditions=[_condition("Ready"), _condition("Ready")])
    obj["status"]["conditions"] = [
        {**c, "lastTransitionTime": "2026-01-02T03:04:05Z"} for c in obj["status"]["conditions"]
    ]
    assert _admit_problems(obj) == ["status.conditions[1]: Duplicate value: type='Ready'"]


def test_cel_runs_after_defaulting_like_the_apiserver() -> None:
    # Without defaults, training.backend would be absent and the ibm: rule could not be evaluated.
    obj = changed(objects.model(), spec__training={"shots": 10})
    assert admit(obj, crd_by_kind("QuantumModel"))[1] == []
    problems = validate_against_crd(obj, crd_by_kind("QuantumModel"))
    assert any("rule evaluation error" in p for p in problems), problems
