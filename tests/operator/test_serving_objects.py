"""spec.serving's Deployment and Service as the operator builds them: valid Kubernetes objects, the
Git Secret mounted when one is named, the comparison that keeps a steady model from patching, and the
objects of a model that stopped serving while no operator ran, removed when one starts."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from controller.api.quantummodel import Serving
from controller.operator.checkpoints import ModelRef
from controller.operator.serving import ServingSetup, covers, deployment, object_name, service
from tests.operator.operator_env import NAMESPACE, OperatorEnv, tiny_model
from tests.operator.test_end_to_end import env

__all__ = ["env"]  # the end-to-end tests' operator environment (every call checked against deploy/rbac.yaml)

REF = ModelRef(namespace="team-q", name="iris-vqc", uid="0b9f4c1e-7d1a-4c55-9a55-2f4b1f0e6a11")
SERVING = Serving.model_validate({"replicas": 2, "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}})
SETUP = ServingSetup(image="registry.example/qmlops:1", repo="https://git.example/models.git", branch="main")


@pytest.mark.parametrize("version", ["1.28", "1.37"])
def test_the_objects_are_valid_kubernetes(version: str) -> None:
    secret = ServingSetup(**{**SETUP.__dict__, "git_secret": "models-read"})
    for body in (deployment(REF, SERVING, SETUP), deployment(REF, SERVING, secret), service(REF)):
        kubernetes_validate.validate(body, version, strict=True)


def test_a_named_git_secret_is_mounted_read_only_and_passed_to_qmlops_serve() -> None:
    plain = deployment(REF, SERVING, SETUP)["spec"]["template"]["spec"]
    assert not any("--git-secret-dir" in a for a in plain["containers"][0]["args"])
    setup = ServingSetup(**{**SETUP.__dict__, "git_secret": "models-read"})
    pod = deployment(REF, SERVING, setup)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert "--git-secret-dir=/etc/qmlops/git" in container["args"] and "--branch=main" in container["args"]
    assert {"name": "git-credentials", "mountPath": "/etc/qmlops/git", "readOnly": True} in container["volumeMounts"]
    assert {"name": "git-credentials", "secret": {"secretName": "models-read", "defaultMode": 0o440}} in pod["volumes"]


def test_a_long_model_name_still_makes_a_dns_label() -> None:
    name = "m" * 63
    made = object_name(name)
    assert len(made) <= 63 and made.endswith("-serving")
    assert made != object_name("m" * 62), "names cut to the same prefix stay apart"


def test_defaults_added_by_the_apiserver_do_not_count_as_a_change_an_edit_does() -> None:
    want = deployment(REF, SERVING, SETUP)
    live = copy.deepcopy(want)
    live["metadata"]["uid"] = "x"
    live["spec"]["strategy"] = {"type": "RollingUpdate"}
    live["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = "/dev/termination-log"
    live["status"] = {"readyReplicas": 2}
    assert covers(live, want)
    live["spec"]["replicas"] = 5
    assert not covers(live, want)
    edited = copy.deepcopy(want)
    edited["spec"]["template"]["spec"]["containers"][0]["args"].append("--log-inputs")
    assert not covers(edited, want)


@pytest.mark.slow
async def test_an_operator_starting_removes_the_serving_objects_of_a_model_that_stopped_serving(
    env: OperatorEnv,
) -> None:
    """spec.serving was taken away while no operator ran: the next operator's start finds the objects by
    their labels and owner reference and deletes them; a model still serving keeps its own, and objects
    whose model is gone are left to the garbage collector."""
    setup = ServingSetup(image="registry.example/qmlops:1", repo=str(env.remote))
    refs = {}
    for name, model in (
        ("stopped", tiny_model("stopped", suspend=True)),
        ("serving", tiny_model("serving", suspend=True, serving={"replicas": 1})),
    ):
        await env.client.create(model)
        uid = (env.model(name) or {})["metadata"]["uid"]
        refs[name] = ModelRef(namespace=NAMESPACE, name=name, uid=uid)
    refs["gone"] = ModelRef(namespace=NAMESPACE, name="gone", uid="5d0c1a3e-0000-4000-8000-00000000dead")
    for ref in refs.values():
        await env.client.create(deployment(ref, Serving(), setup))
        await env.client.create(service(ref))

    def present(kind: str, name: str) -> bool:
        return env.kube.read(kind, NAMESPACE, object_name(name)) is not None

    async with env.operator():
        await env.until(lambda: not present("Deployment", "stopped") and not present("Service", "stopped"), 30)
        await env.until_phase("Suspended", "serving")
    for kind in ("Deployment", "Service"):
        assert present(kind, "serving"), "a model that still serves keeps its objects"
        assert present(kind, "gone"), "a model that is gone: its owner reference's garbage collection"
