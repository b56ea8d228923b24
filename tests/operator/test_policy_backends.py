"""The operator knows a model's pipelines: a model's compliance report asks for an accuracy on each backend its
pipelines evaluate on, so the operator's model reconcile hears them from the pipelines it watches (issue 12)."""

from __future__ import annotations

from typing import Any, cast

import kopf

from controller.operator.pipelines import Pipelines
from tests.api.specs import changed, pipeline


def watched(pipelines: Pipelines, uid: str, body: dict[str, Any]) -> None:
    meta = body["metadata"]
    pipelines.worker(uid, meta["namespace"], meta["name"]).body = kopf.Body(cast(kopf.RawBody, body))


def test_the_backends_of_a_models_pipelines_are_its_evaluate_steps_backends() -> None:
    pipelines = Pipelines(cast(Any, None))
    nightly = pipeline()  # DESIGN's: iris-vqc in team-quantum, evaluated on fake:manila and fake:kyiv
    watched(pipelines, "u1", nightly)
    other_model = changed(changed(pipeline(), "metadata.name", "other"), "spec.model", "another-model")
    watched(pipelines, "u2", other_model)
    refused = changed(pipeline(), "metadata.name", "broken")
    refused["spec"]["failFast"] = "maybe"  # the types refuse it: its backends count for nothing
    next(s for s in refused["spec"]["steps"] if "evaluate" in s)["evaluate"]["backends"] = ["fake:sherbrooke"]
    watched(pipelines, "u3", refused)
    assert pipelines.backends_of("team-quantum", "iris-vqc") == ("fake:manila", "fake:kyiv")
    assert pipelines.backends_of("elsewhere", "iris-vqc") == ()
    assert pipelines.backends_of("team-quantum", "another-model") == ("fake:manila", "fake:kyiv")
