"""Valid QuantumModel and QuantumPipeline objects, and a way to derive a broken one from them."""

from __future__ import annotations

import copy
from typing import Any

_MISSING = object()


def model() -> dict[str, Any]:
    return {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumModel",
        "metadata": {"name": "iris-vqc", "namespace": "team-quantum"},
        "spec": {
            "owner": "alice@example.com",
            "dataset": {"source": "builtin:iris", "features": ["a", "b", "c", "d"], "classes": [0, 1]},
            "circuit": {"qubits": 4, "ansatz": {"kind": "RealAmplitudes", "reps": 2}},
            "training": {"backend": "local:aer", "shots": 1024},
            "promotion": {"gates": [{"metric": "accuracy", "min": 0.85}], "requiredApprovals": 1},
            "governance": {
                "approvers": ["alice@example.com", "bob@example.com"],
                "maxShots": 100000,
                "requireModelCard": True,
            },
            "modelCard": {"intendedUse": "Teaching example", "limitations": "Four features"},
        },
    }


def pipeline() -> dict[str, Any]:
    return {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumPipeline",
        "metadata": {"name": "iris-nightly", "namespace": "team-quantum"},
        "spec": {
            "model": "iris-vqc",
            "triggers": [{"gitChange": {"paths": ["specs/iris/**"]}}, {"schedule": "0 2 * * *"}],
            "steps": [
                {"name": "sweep", "train": {"matrix": {"circuit.ansatz.reps": [1, 2]}}},
                {"name": "pick", "dependsOn": ["sweep"], "select": {"metric": "accuracy", "mode": "max"}},
                {"name": "promote", "dependsOn": ["pick"], "promote": {}},
            ],
        },
    }


def policy() -> dict[str, Any]:
    """DESIGN's QuantumPolicy: a floor under the team's confidential and restricted models."""
    return {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumPolicy",
        "metadata": {"name": "production-floor"},
        "spec": {
            "match": {"namespaces": ["team-quantum"], "dataClassification": ["confidential", "restricted"]},
            "floor": {
                "enforcement": "enforce",
                "allowedBackends": ["fake:*", "ibm:*"],
                "requiredApprovals": 1,
                "requireSignedApprovals": True,
                "separationOfDuties": True,
                "pinRequiresApproval": True,
                "retention": {"maxVersions": 20},
            },
            "packs": ["eu-ai-act-high-risk", "gdpr"],
        },
    }


def changed(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy with each dotted path (``spec__training__shots`` or ``spec__steps__0__name``) set, or removed
    when the value is ``None``."""
    out = copy.deepcopy(obj)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        key: Any = int(last) if isinstance(node, list) else last
        if value is None:
            del node[key]
        else:
            node[key] = value
    return out
