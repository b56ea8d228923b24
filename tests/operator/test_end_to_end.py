"""The operator end to end against the harness: a model applied through the API trains, is promoted,
shows Ready with its champion, survives a restart mid-training and is released on delete."""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import os
import signal
import ssl
import stat
import sys
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
from ruamel.yaml import YAML

from controller.engine import training
from controller.operator import checkpoints, webhook
from controller.operator.settings import FINALIZER
from tests.operator.operator_env import (
    GIT_TOKEN,
    IBM_TOKEN,
    NAMESPACE,
    OperatorEnv,
    git,
    make_remote,
    secret,
    tiny_model,
)
from tests.operator.test_webhook import admission_review
from tests.support.kube import Client, KubeApi, free_port, load_crds, port_open
from tests.training.standin import StandInFactory, installed

pytestmark = pytest.mark.slow
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


SOURCE = {
    "qmlops.io/source-repository": "https://github.com/example/quantum-models",
    "qmlops.io/source-revision": "main@sha1:" + "a1" * 20,
    "qmlops.io/source-path": "specs/iris/model.yaml",
    "qmlops.io/source-author": "alice@example.com",
}


def printer_columns(live: dict[str, Any]) -> dict[str, Any]:
    """What ``kubectl get qm`` shows for the object: each printer column's value."""
    crd = next(c for c in load_crds() if c["spec"]["names"]["kind"] == "QuantumModel")
    values: dict[str, Any] = {}
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        value: Any = live
        for key in column["jsonPath"].lstrip(".").split("."):
            value = value.get(key) if isinstance(value, dict) else None
        values[column["name"]] = value
    return values


# The calls only a pipeline makes: its model read by name, its status written, its finalizer while it runs.
USED_BY_PIPELINES = {
    ("qmlops.io", "quantummodels", "get"),
    ("qmlops.io", "quantumpipelines/status", "patch"),
    ("qmlops.io", "quantumpipelines", "patch"),
}
USED_BY_A_NEW_POD = {("", "configmaps", "get")}  # a checkpoint restored: the restart test
# The calls only a model with spec.serving makes: its Deployment and Service read, written, removed.
USED_BY_SERVING = {
    (group, plural, verb)
    for group, plural in (("apps", "deployments"), ("", "services"))
    for verb in ("get", "create", "patch", "delete")
}


@pytest.fixture
async def env(kube: KubeApi, client: Client, tmp_path: Path) -> AsyncIterator[OperatorEnv]:
    kube.register_crds()
    await client.namespace(NAMESPACE)
    yield OperatorEnv(kube, client, make_remote(tmp_path), tmp_path)
    # whatever a test did, faults included, every call the operator made is allowed by deploy/rbac.yaml
    # (and kopf's peering calls by deploy/peering/rbac.yaml, the component that --peering needs)
    used = kube.calls("kopf/", "qmlops-operator/")
    peering = {call for call in used if call[0] == "kopf.dev"}
    assert used - peering <= allowed_by_cluster_role(), used - peering - allowed_by_cluster_role()
    assert peering <= allowed_by_cluster_role(DEPLOY / "peering"), peering


def finalizers(body: dict[str, Any] | None) -> list[str]:
    return list(((body or {}).get("metadata") or {}).get("finalizers") or ())


def allowed_by_cluster_role(folder: Path = DEPLOY) -> set[tuple[str, str, str]]:
    docs = YAML(typ="safe").load_all((folder / "rbac.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "ClusterRole")
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


async def test_a_model_trains_is_promoted_and_released(env: OperatorEnv, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await env.client.create(secret("git-credentials", token=GIT_TOKEN))
    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    model = tiny_model(training={**tiny_model()["spec"]["training"], "credentialsSecret": "ibm-quantum"})
    model["metadata"]["annotations"] = SOURCE  # as CI or a kustomization's commonAnnotations set them
    async with env.operator(git_secret=f"{NAMESPACE}/git-credentials") as runtime:
        await env.client.create(model)
        # kopf holds the finalizer while a training runs, and only then
        await env.until(lambda: env.status().get("phase") == "Training" and FINALIZER in finalizers(env.model()))
        status = await env.until_phase("Ready")
        await env.until(lambda: FINALIZER not in finalizers(env.model()), 30)  # nothing to stop now
        live = env.model()
        assert live is not None
        assert status["observedGeneration"] == live["metadata"]["generation"] == 1
        assert status["champion"]["version"] == 1 and "accuracy" in status["champion"]["metrics"]
        assert status["latestVersion"]["version"] == 1 and status["champion"]["commit"]
        assert status["source"] == {
            "repository": SOURCE["qmlops.io/source-repository"],
            "revision": SOURCE["qmlops.io/source-revision"],
            "path": SOURCE["qmlops.io/source-path"],
            "author": SOURCE["qmlops.io/source-author"],
        }
        assert status["usage"]["primitiveJobs"] > 0 and status["usage"]["shots"] >= 0
        assert status["policy"]["results"] and "summary" in status["policy"]
        assert all(printer_columns(live).values()), printer_columns(live)
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions == {
            "Ready": "True",
            "Reconciling": "False",
            "Stalled": "False",
            "Validated": "True",
            "Compliant": "True",
            "Trained": "True",
            "Promoted": "True",
        }
        assert env.decisions() == ["registered", "gate-passed", "promoted"]
        await env.until(lambda: {"Registered", "GatePassed", "Promoted"} <= set(env.reasons()), 30)
        assert env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny") is None, (
            "a finished training keeps no checkpoint"
        )
        iterations = runtime.metrics.iterations._value.get()
        assert iterations >= 1

        # the requestedAt annotation is answered, and asks for nothing new
        await env.client.patch(
            "QuantumModel",
            NAMESPACE,
            "iris-tiny",
            {"metadata": {"annotations": {"reconcile.qmlops.io/requestedAt": "2026-01-01T00:00:00Z"}}},
        )
        await env.until(lambda: env.status().get("lastHandledReconcileAt") == "2026-01-01T00:00:00Z", 60)
        assert env.decisions() == ["registered", "gate-passed", "promoted"]

        # a spec change trains version 2
        await env.client.patch(
            "QuantumModel", NAMESPACE, "iris-tiny", {"spec": {"training": {"optimizer": {"maxIterations": 3}}}}
        )
        await env.until(lambda: (env.status().get("champion") or {}).get("version") == 2, 120)
        assert env.status()["observedGeneration"] == 2
        assert env.decisions() == ["registered", "gate-passed", "promoted"] * 2

        # suspended: nothing trained or promoted, and the phase says so
        await env.client.patch("QuantumModel", NAMESPACE, "iris-tiny", {"spec": {"suspend": True}})
        await env.until_phase("Suspended", timeout=60)

        await env.client.delete("QuantumModel", NAMESPACE, "iris-tiny")
        await env.until(lambda: env.model() is None, 60)
    assert env.decisions() == ["registered", "gate-passed", "promoted"] * 2, "history stays in Git"

    # every rule of deploy/rbac.yaml is used: here, by pipelines or by a new pod (the env checks every
    # call is allowed)
    unused = allowed_by_cluster_role() - env.kube.calls("kopf/", "qmlops-operator/")
    assert unused == USED_BY_PIPELINES | USED_BY_A_NEW_POD | USED_BY_SERVING

    # the secrets never left their Secrets
    everything = str(env.kube.list("QuantumModel")) + str(env.kube.list("Event")) + env.remote_files() + caplog.text
    assert GIT_TOKEN not in everything and IBM_TOKEN not in everything


async def test_spec_serving_makes_the_operator_own_a_deployment_and_a_service_running_qmlops_serve(
    env: OperatorEnv,
) -> None:
    """With spec.serving the operator writes a Deployment running ``qmlops serve`` for the model (ready on
    /v2/health/ready) and a Service, both owned by the model; a change is patched in, taking
    spec.serving away deletes them, and a model without it makes no such call."""
    resources = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    async with env.operator(serving_image="registry.example/qmlops:test"):
        await env.client.create(tiny_model("plain"))
        await env.client.create(tiny_model(serving={"replicas": 2, "resources": resources}))
        await env.until_phase("Ready")
        await env.until_phase("Ready", name="plain")
        await env.until(lambda: env.kube.read("Service", NAMESPACE, "iris-tiny-serving"), 30)
        deployment = env.kube.read("Deployment", NAMESPACE, "iris-tiny-serving")
        service = env.kube.read("Service", NAMESPACE, "iris-tiny-serving")
        assert deployment is not None and service is not None
        model = env.model()
        assert model is not None
        for obj in (deployment, service):
            [ref] = obj["metadata"]["ownerReferences"]
            assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (
                "QuantumModel",
                "iris-tiny",
                model["metadata"]["uid"],
                True,
            )
        spec = deployment["spec"]
        assert spec["replicas"] == 2
        selector = spec["selector"]["matchLabels"]
        assert selector == {"qmlops.io/model": "iris-tiny", "app.kubernetes.io/component": "serving"}
        assert selector.items() <= spec["template"]["metadata"]["labels"].items()
        [container] = spec["template"]["spec"]["containers"]
        assert container["image"] == "registry.example/qmlops:test"
        assert container["args"][:4] == [
            "serve",
            f"--repo={env.remote}",
            f"--models={NAMESPACE}/iris-tiny",
            "--port=8080",
        ]
        assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert container["resources"] == resources
        assert spec["template"]["spec"]["automountServiceAccountToken"] is False, "serving reads no Kubernetes API"
        assert service["spec"]["selector"] == selector
        assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
        assert env.kube.list("Deployment", NAMESPACE) == [deployment], (
            "no serving objects for a model without spec.serving"
        )

        edited = {"spec": {"ports": [{"name": "http", "port": 9999, "targetPort": "http", "protocol": "TCP"}]}}
        await env.client.patch("Service", NAMESPACE, "iris-tiny-serving", edited)  # someone edits it by hand
        await env.client.patch("QuantumModel", NAMESPACE, "iris-tiny", {"spec": {"serving": {"replicas": 3}}})
        await env.until(
            lambda: (
                (env.kube.read("Deployment", NAMESPACE, "iris-tiny-serving") or {}).get("spec", {}).get("replicas") == 3
            ),
            60,
        )
        await env.until(
            lambda: (
                (env.kube.read("Service", NAMESPACE, "iris-tiny-serving") or {}).get("spec", {}).get("ports")
                == service["spec"]["ports"]
            ),
            30,
        )
        await env.client.patch("QuantumModel", NAMESPACE, "iris-tiny", {"spec": {"serving": None}})
        await env.until(lambda: env.kube.read("Deployment", NAMESPACE, "iris-tiny-serving") is None, 60)
        await env.until(lambda: env.kube.read("Service", NAMESPACE, "iris-tiny-serving") is None, 60)
    used = env.kube.calls("kopf/", "qmlops-operator/")
    assert used >= USED_BY_SERVING, USED_BY_SERVING - used


def allowed_by_role(folder: Path) -> set[tuple[str, str, str]]:
    docs = YAML(typ="safe").load_all((folder / "rbac.yaml").read_text())
    role = next(d for d in docs if d and d["kind"] == "Role")
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


async def test_the_namespaced_install_calls_only_into_its_namespace_with_exactly_its_role(env: OperatorEnv) -> None:
    """deploy/namespaced: the operator serving one namespace (-n), its Git Secret there, makes every
    call in that namespace, each allowed by the Role, and uses every rule of it (but those only a
    pipeline or a new pod's restore uses, as for the ClusterRole)."""
    await env.client.create(secret("qmlops-git", token=GIT_TOKEN))
    async with env.operator(namespaces=(NAMESPACE,), git_secret=f"{NAMESPACE}/qmlops-git"):
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
        await env.until(lambda: env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny") is None, 30)
    calls = env.kube.calls_in("kopf/", "qmlops-operator/")
    assert {namespace for namespace, *_ in calls} == {NAMESPACE}, sorted(c for c in calls if c[0] != NAMESPACE)
    used = {(group, plural, verb) for _, group, plural, verb in calls}
    role = allowed_by_role(DEPLOY / "namespaced")
    assert used <= role, used - role
    assert role - used == USED_BY_PIPELINES | USED_BY_A_NEW_POD | USED_BY_SERVING


class Hold:
    """A trainer that is the real one, held at an iteration until released or told to stop: the test
    stops the operator there, mid-training."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.reached = threading.Event()
        self.seen: list[int | None] = []

    def __call__(self, spec: Any, **options: Any) -> Any:
        report = options.get("on_progress")
        should_stop = options.get("should_stop") or (lambda: False)

        def progress(update: Any) -> None:
            if report is not None:
                report(update)
            iteration = getattr(update, "iteration", None)
            self.seen.append(iteration)
            if iteration is not None and iteration >= self.at:
                self.reached.set()
                while not should_stop():
                    threading.Event().wait(0.05)

        return training.train(spec, **{**options, "on_progress": progress})


class Count:
    def __init__(self) -> None:
        self.seen: list[int | None] = []

    def __call__(self, spec: Any, **options: Any) -> Any:
        report = options.get("on_progress")

        def progress(update: Any) -> None:
            self.seen.append(getattr(update, "iteration", None))
            if report is not None:
                report(update)

        return training.train(spec, **{**options, "on_progress": progress})


class Closing(StandInFactory):
    """IBM, offline (tests.training.standin), remembering which sessions were closed by id."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: list[str] = []

    def close_session(self, service: Any, session_id: str) -> None:
        self.closed.append(session_id)


def on_ibm(iterations: int) -> dict[str, Any]:
    """The tiny model on an IBM device in session mode (a fake device through the stand-in)."""
    spec = tiny_model(iterations=iterations)["spec"]
    training_spec = {
        **spec["training"],
        "backend": "ibm:fake_manila",
        "executionMode": "session",
        "shots": 64,
        "credentialsSecret": "ibm-quantum",
    }
    return tiny_model(
        iterations=iterations,
        training=training_spec,
        governance={"allowedBackends": ["local:*", "ibm:*"], "qpuBudgetSeconds": 600},
    )


async def test_a_restarted_operator_resumes_training_and_reattaches_to_its_session(env: OperatorEnv) -> None:
    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    hold = Hold(at=3)
    ibm = Closing()
    with installed(ibm):
        async with env.operator("pod-a", trainer=hold):
            await env.client.create(on_ibm(iterations=8))
            await env.until(hold.reached.is_set, 120)
            await env.until(lambda: env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny"), 30)
            assert env.status().get("phase") == "Training"
            assert env.condition("iris-tiny", "Reconciling").get("status") == "True"
            assert env.status()["training"]["sessionId"] == "standin-session-1"
        assert env.decisions() == [], "nothing registered before the restart"
        assert ibm.closed == [], "a stopped operator leaves the session open for the next pod"

        count = Count()
        async with env.operator("pod-b", trainer=count):  # a new pod: its disk is empty
            status = await env.until_phase("Ready")
    first_after_restart = min(i for i in count.seen if i is not None)
    assert first_after_restart > max(i for i in hold.seen if i is not None), (hold.seen, count.seen)
    assert ibm.resumed == [None, "standin-session-1"], "the new pod reattached to the open session"
    assert status["champion"]["version"] == 1
    assert env.decisions() == ["registered", "gate-passed", "promoted"]


async def test_a_tampered_checkpoint_configmap_is_ignored_and_training_starts_afresh(
    env: OperatorEnv, caplog: pytest.LogCaptureFixture
) -> None:
    """The journal in the ConfigMap rewritten (other values) and the digests kept beside it recomputed:
    the digest the operator recorded on the model does not match, so the new pod trains from scratch."""
    hold = Hold(at=3)
    async with env.operator("pod-a", trainer=hold):
        await env.client.create(tiny_model(iterations=8))
        await env.until(hold.reached.is_set, 120)
        await env.until(lambda: env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny"), 30)
    kept = env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny") or {}
    files = {entry["path"]: base64.b64decode(kept["binaryData"][key]) for key, entry in file_index(kept).items()}
    journal_path = next(p for p in files if p.endswith("/checkpoint/journal.jsonl"))  # <training key>/checkpoint/
    journal = [json.loads(line) for line in files[journal_path].splitlines() if line.strip()]
    jobs = [line["entry"] for line in journal if "entry" in line]  # after the header line
    assert len(jobs) >= 3
    for job in jobs:
        job["values"] = [0.0 for _ in job["values"]]
    files[journal_path] = "".join(json.dumps(entry) + "\n" for entry in journal).encode()
    data, index = checkpoints.encode(files)
    tampered = {"metadata": {"annotations": {checkpoints.FILES_ANNOTATION: json.dumps(index)}}, "binaryData": data}
    await env.client.patch("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny", tampered)

    count = Count()
    with caplog.at_level(logging.WARNING, logger="controller.operator"):
        async with env.operator("pod-b", trainer=count):  # a new pod: its disk is empty
            status = await env.until_phase("Ready")
    assert min(i for i in count.seen if i is not None) == 1, "the tampered journal was not replayed"
    assert "does not match the digest the operator recorded" in caplog.text
    assert status["champion"]["version"] == 1


def file_index(configmap: dict[str, Any]) -> dict[str, dict[str, str]]:
    return dict(json.loads(configmap["metadata"]["annotations"][checkpoints.FILES_ANNOTATION]))


async def test_deleting_a_model_stops_its_training_closes_its_session_and_releases_it(env: OperatorEnv) -> None:
    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    hold = Hold(at=2)
    ibm = Closing()
    ibm.seconds_per_job = 1.5  # IBM bills each job: what the stopped training spent is recorded
    with installed(ibm):
        async with env.operator(trainer=hold) as runtime:
            await env.client.create(on_ibm(iterations=8))
            await env.until(hold.reached.is_set, 120)
            await env.until(lambda: env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny"), 30)
            await env.client.delete("QuantumModel", NAMESPACE, "iris-tiny")
            await env.until(lambda: env.model() is None, 60)  # the finalizer was released
            await env.until(lambda: "Released" in env.reasons(), 30)
            assert not runtime.checkpoint_dir(NAMESPACE, "iris-tiny").exists(), "the pod's copy is gone"
    assert ibm.closed == ["standin-session-1"]
    assert max(i for i in hold.seen if i is not None) == 2, "the training stopped where it was held"
    assert env.kube.read("ConfigMap", NAMESPACE, "qmlops-checkpoint-iris-tiny") is None, "collected with its owner"
    assert env.decisions() == ["stopped"], "nothing was registered; what its jobs spent is in Git"
    assert "Released" in env.reasons()


async def test_a_model_deleted_while_the_operator_was_down_is_released_by_the_next_pod(env: OperatorEnv) -> None:
    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    hold = Hold(at=2)
    ibm = Closing()
    with installed(ibm):
        async with env.operator("pod-a", trainer=hold):
            await env.client.create(on_ibm(iterations=8))
            await env.until(hold.reached.is_set, 120)
            assert FINALIZER in finalizers(env.model())
        await env.client.delete("QuantumModel", NAMESPACE, "iris-tiny")
        assert env.model() is not None, "the finalizer holds the model while no operator runs"
        async with env.operator("pod-b"):
            await env.until(lambda: env.model() is None, 60)
            await env.until(lambda: "Released" in env.reasons(), 30)
    assert ibm.closed == ["standin-session-1"], "the session the training kept open was closed"
    assert env.decisions() == []


async def test_an_operator_restarted_with_another_repo_pushes_to_the_new_remote_only(
    env: OperatorEnv, tmp_path: Path
) -> None:
    """The same work folder, another --repo: the clones of the first repository are not reused, so
    the decisions go to the new remote and the old one is left as it was."""
    async with env.operator("pod"):
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
    old_head = git("--git-dir", str(env.remote), "rev-parse", "main")
    assert env.decisions() == ["registered", "gate-passed", "promoted"]

    other = make_remote(tmp_path / "other")
    async with env.operator("pod", repo=str(other)):
        await env.client.create(tiny_model("wine-tiny"))
        await env.until_phase("Ready", "wine-tiny")
    assert git("--git-dir", str(env.remote), "rev-parse", "main") == old_head, "the old remote is unchanged"
    assert env.decisions("wine-tiny") == []
    pushed = git("--git-dir", str(other), "log", "--format=%(trailers:key=Qmlops-Model,valueonly)", "main")
    assert f"{NAMESPACE}/wine-tiny" in pushed and f"{NAMESPACE}/iris-tiny" in pushed


async def test_git_unreachable_keeps_the_last_good_state_and_retries(env: OperatorEnv) -> None:
    async with env.operator():
        await env.client.create(tiny_model())
        good = await env.until_phase("Ready")
        hidden = env.remote.with_name("gitops-away.git")
        env.remote.rename(hidden)  # the remote is gone
        try:
            await env.client.patch(
                "QuantumModel",
                NAMESPACE,
                "iris-tiny",
                {"metadata": {"annotations": {"reconcile.qmlops.io/requestedAt": "now"}}},
            )
            await env.until(lambda: env.condition("iris-tiny", "Stalled").get("status") == "True", 60)
            stalled = env.status()
            assert stalled["champion"] == good["champion"], "the champion is kept"
            assert "git" in env.condition("iris-tiny", "Stalled")["message"].lower()
            await env.until(lambda: "ReconcileFailed" in env.reasons(), 30)
            warned = next(e for e in env.events() if e["reason"] == "ReconcileFailed")
            assert warned["type"] == "Warning" and str(hidden) not in warned["message"]
        finally:
            hidden.rename(env.remote)
        await env.until(
            lambda: env.status().get("phase") == "Ready" and env.status().get("lastHandledReconcileAt") == "now", 60
        )
    assert env.decisions() == ["registered", "gate-passed", "promoted"]


async def test_a_rejected_push_is_retried_without_duplicates(env: OperatorEnv) -> None:
    hook = env.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch' >&2\nexit 1\n")
    hook.chmod(0o755)
    async with env.operator():
        await env.client.create(tiny_model())
        await env.until(lambda: env.condition("iris-tiny", "Stalled").get("status") == "True", 120)
        assert env.decisions() == []
        hook.unlink()
        status = await env.until_phase("Ready")
    assert status["champion"]["version"] == 1
    assert env.decisions() == ["registered", "gate-passed", "promoted"]


async def test_api_faults_converge_without_duplicate_trainings_versions_or_events(env: OperatorEnv) -> None:
    count = Count()
    kube = env.kube
    kube.fail(kmock.action.UPDATE, "quantummodels", status=503, times=3, subresource="status")
    kube.fail(kmock.action.UPDATE, "quantummodels", status=409, times=2, subresource="status")
    kube.fail(kmock.action.CREATE, "configmaps", status=500, times=1)
    kube.fail(kmock.action.CREATE, "events", status=503, times=2)
    async with env.operator(trainer=count):
        await env.client.create(tiny_model())
        await env.until(lambda: count.seen, 120)
        kube.drop_watches()
        kube.stall(kmock.action.FETCH, "configmaps", seconds=0.5)
        status = await env.until_phase("Ready")
        kube.drop_watches()
        await env.until(lambda: {"Registered", "GatePassed", "Promoted"} <= set(env.reasons()), 30)
    assert status["champion"]["version"] == 1
    assert env.decisions() == ["registered", "gate-passed", "promoted"]
    assert sorted(env.reasons()).count("Registered") == 1 and sorted(env.reasons()).count("Promoted") == 1
    iterations = [i for i in count.seen if i is not None]
    assert len(iterations) == len(set(iterations)), f"an iteration ran twice: {iterations}"


async def test_a_spec_the_types_refuse_is_reported_not_a_crash(env: OperatorEnv) -> None:
    broken = tiny_model("broken", training={"backend": "fake:nowhere"})  # the CRD's pattern allows it
    async with env.operator():
        await env.client.create(broken)
        await env.client.create(tiny_model())
        await env.until(lambda: env.condition("broken", "Validated").get("status") == "False", 60)
        assert env.status("broken")["phase"] == "Failed"
        assert env.condition("broken", "Stalled")["status"] == "True"
        assert "training.backend" in env.condition("broken", "Validated")["message"]
        await env.until_phase("Ready")  # the other model is not held up


async def test_pipelines_are_validated_and_get_status(env: OperatorEnv) -> None:
    """Validation only (suspended: no run starts); tests/operator/test_pipelines.py runs pipelines."""
    pipeline: dict[str, Any] = {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumPipeline",
        "metadata": {"name": "nightly", "namespace": NAMESPACE},
        "spec": {
            "model": "iris-tiny",
            "suspend": True,
            "triggers": [{"schedule": "0 2 * * *"}],
            "steps": [
                {"name": "sweep", "train": {"matrix": {"circuit.ansatz.reps": [1, 2]}}},
                {"name": "score", "dependsOn": ["sweep"], "evaluate": {"backends": ["local:aer"]}},
                {"name": "pick", "dependsOn": ["score"], "select": {}},
                {"name": "promote", "dependsOn": ["pick"], "promote": {}},
            ],
        },
    }
    forbidden: dict[str, Any] = {**pipeline, "metadata": {"name": "on-ibm", "namespace": NAMESPACE}}
    on_ibm = {"name": "check", "dependsOn": ["sweep"], "evaluate": {"backends": ["ibm:ibm_kyiv"]}}
    forbidden["spec"] = {**pipeline["spec"], "steps": [pipeline["spec"]["steps"][0], on_ibm]}

    def pipeline_status(name: str) -> dict[str, Any]:
        return dict((env.kube.read("QuantumPipeline", NAMESPACE, name) or {}).get("status") or {})

    async with env.operator():
        await env.client.create(pipeline)
        await env.until(lambda: pipeline_status("nightly").get("phase") == "Pending", 30)
        conditions = {c["type"]: c for c in pipeline_status("nightly")["conditions"]}
        assert conditions["Ready"]["reason"] == "ModelNotFound" and conditions["Validated"]["status"] == "True"
        assert conditions["Stalled"]["status"] == "True"
        await env.client.create(tiny_model())
        await env.until(lambda: pipeline_status("nightly").get("phase") == "Ready", 60)
        assert pipeline_status("nightly")["observedGeneration"] == 1
        assert "suspend" in pipeline_status("nightly")["message"]
        await env.client.create(forbidden)
        await env.until(lambda: pipeline_status("on-ibm").get("phase") == "Failed", 30)
        stalled = {c["type"]: c for c in pipeline_status("on-ibm")["conditions"]}["Stalled"]
        assert stalled["status"] == "True" and "spec.steps[1].evaluate.backends[0]" in stalled["message"]
    no_run = USED_BY_PIPELINES - {("qmlops.io", "quantumpipelines", "patch")}  # the finalizer: while a run trains
    assert env.kube.calls("kopf/", "qmlops-operator/") >= no_run


async def test_a_scheduled_model_retrains_when_its_schedule_comes_due(env: OperatorEnv) -> None:
    # the operator's clock stands two seconds before the daily 03:00 retraining until the test moves it
    now = [datetime(2026, 1, 1, 2, 59, 58, tzinfo=UTC)]
    scheduled = tiny_model(iterations=2, training={**tiny_model()["spec"]["training"], "schedule": "0 3 * * *"})
    scheduled["spec"]["training"]["optimizer"]["maxIterations"] = 2
    async with env.operator(clock=lambda: now[0]):
        await env.client.create(scheduled)
        await env.until_phase("Ready")
        assert env.status()["champion"]["version"] == 1
        now[0] += timedelta(seconds=5)  # 03:00:03: the worker, asleep until the tick, looks again
        await env.until(lambda: (env.status().get("champion") or {}).get("version") == 2, 120)
    assert env.decisions() == ["registered", "gate-passed", "promoted"] * 2
    assert env.status()["observedGeneration"] == 1, "nobody changed the spec: the schedule retrained it"


async def test_prometheus_metrics_and_the_liveness_probe_are_served(env: OperatorEnv) -> None:
    metrics_port, liveness_port = free_port(), free_port()
    liveness = f"http://127.0.0.1:{liveness_port}/healthz"
    async with env.operator(metrics_port=metrics_port, liveness=liveness):
        await env.client.create(tiny_model(iterations=2))
        await env.until_phase("Ready")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{metrics_port}/metrics") as rsp:
                assert rsp.status == 200
                exposition = await rsp.text()
            async with http.get(liveness) as rsp:
                assert rsp.status == 200
                probes = await rsp.json()
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['qmlops_reconciles_total{kind="QuantumModel",result="ok"}'] >= 1
    assert samples["qmlops_training_iterations_total"] >= 2
    assert samples["qmlops_promotions_total"] == 1
    assert samples['qmlops_decisions_total{kind="registered"}'] == 1
    assert {"qmlops_qpu_seconds_total", "qmlops_queue_depth", "qmlops_reconciles_running"} <= set(samples)
    assert probes["workers"] == {"models": 1, "pipelines": 0}


def harness_kubeconfig(env: OperatorEnv, folder: Path) -> Path:
    return env.kube.write_kubeconfig(folder / "kubeconfig")


async def run_command(
    env: OperatorEnv, *args: str, environment: dict[str, str] | None = None, model: str = "iris-tiny"
) -> str:
    """``python -m controller operator ARGS`` as its own process until ``model`` is Ready, then
    SIGTERM, as Kubernetes sends it; its output (stdout and stderr), after asserting it exited 0."""
    command = [sys.executable, "-m", "controller", "operator", *args]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=environment
    )
    try:
        await env.client.create(tiny_model(model))
        status = await env.until_phase("Ready", model, timeout=180)
        assert status["champion"]["version"] == 1
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-2000:]
    return text


async def test_the_qmlops_operator_command_reconciles_and_stops_on_sigterm(env: OperatorEnv, tmp_path: Path) -> None:
    """The command a Deployment runs, as its own process (process.main and kopf.run with their signal
    handling): a model trains to Ready; SIGTERM, as Kubernetes sends it, ends the process cleanly."""
    args = ["--repo", str(env.remote), "--workdir", str(tmp_path / "pod")]
    args += ["--kubeconfig", str(harness_kubeconfig(env, tmp_path)), "-A"]
    args += ["--webhook-port", "0", "--metrics-port", "0", "--liveness-port", "0"]
    text = await run_command(env, *args)
    assert "Traceback" not in text and "pod-token" not in text
    assert env.decisions() == ["registered", "gate-passed", "promoted"]


async def test_qmlops_operator_with_default_flags_starts_with_one_warning_for_the_webhook(
    env: OperatorEnv, tmp_path: Path
) -> None:
    """Default flags: the webhook (on by default) has no certificate, so it is off with one warning
    line instead of kopf's crash for the package that would make one; the work folder is this user's
    own (XDG_CACHE_HOME here), kept 0700. Only the metrics and liveness ports are moved off their
    fixed defaults, which another process on a shared machine may hold."""
    cache = tmp_path / "cache"
    environment = {**os.environ, "XDG_CACHE_HOME": str(cache), "HOME": str(tmp_path / "home")}
    environment.pop("QMLOPS_WORKDIR", None)
    args = ["--repo", str(env.remote), "--kubeconfig", str(harness_kubeconfig(env, tmp_path))]
    args += ["--metrics-port", str(free_port()), "--liveness-port", str(free_port())]
    text = await run_command(env, *args, environment=environment)
    assert "Traceback" not in text and "MissingDependencyError" not in text, text[-3000:]
    warnings = [line for line in text.splitlines() if "WARNING" in line and "webhook" in line]
    assert len(warnings) == 1 and "webhook off" in warnings[0], text[-3000:]
    assert env.decisions() == ["registered", "gate-passed", "promoted"]
    workdir = cache / "qmlops" / "operator"
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert [p.name for p in workdir.iterdir() if p.name.startswith("git-")], "the clones are in the user's folder"


async def test_qmlops_operator_serves_its_webhook_with_a_self_signed_certificate_on_request(
    env: OperatorEnv, tmp_path: Path
) -> None:
    """--webhook-self-signed (a local run): the certificate is made at start in the work folder, and
    the webhook answers over TLS that trusts it, as an apiserver given its CA would."""
    port = free_port()
    args = ["--repo", str(env.remote), "--workdir", str(tmp_path / "pod"), "--kubeconfig"]
    args += [str(harness_kubeconfig(env, tmp_path)), "--metrics-port", "0", "--liveness-port", "0"]
    args += ["--webhook-self-signed", "--webhook-port", str(port), "--webhook-host", "127.0.0.1"]
    command = [sys.executable, "-m", "controller", "operator", *args]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        await port_open("127.0.0.1", port, timeout=120)
        trust = ssl.create_default_context(cafile=str(tmp_path / "pod" / "webhook-tls" / "tls.crt"))
        bad = tiny_model(training={**tiny_model()["spec"]["training"], "backend": "fake:nowhere"})
        answers = []
        async with aiohttp.ClientSession() as http:
            for obj in (tiny_model(), bad):
                review = admission_review(obj)
                url = f"https://127.0.0.1:{port}/{webhook.WEBHOOKS['quantummodels']}"
                async with http.post(url, json=review, ssl=trust) as rsp:
                    answers.append((await rsp.json())["response"]["allowed"])
        assert answers == [True, False]
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0 and "Traceback" not in text, text[-2000:]
    assert "webhook off" not in text


async def until_said(process: asyncio.subprocess.Process, text: str, seen: list[str], timeout: float = 120) -> None:
    """Read the process's output into ``seen`` until a line holds ``text``."""
    assert process.stdout is not None
    async with asyncio.timeout(timeout):
        while not any(text in line for line in seen):
            line = await process.stdout.readline()
            if not line:
                raise AssertionError(f"the operator ended without saying {text!r}: {''.join(seen)[-2000:]}")
            seen.append(line.decode(errors="replace"))


async def iterations_run(port: int) -> float:
    """The training iterations an operator ran, from its /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as rsp:
        exposition = await rsp.text()
    found = [
        line.split()[-1] for line in exposition.splitlines() if line.startswith("qmlops_training_iterations_total")
    ]
    return float(found[0]) if found else 0.0


def peers_are(env: OperatorEnv, count: int) -> bool:
    return len(peer_priorities(env)) == count


def peer_priorities(env: OperatorEnv) -> list[int]:
    peers = (env.kube.read("ClusterKopfPeering", None, "qmlops") or {}).get("status") or {}
    return sorted(info["priority"] for info in peers.values() if isinstance(info, dict))


async def test_peered_operators_one_is_active_and_the_other_takes_over_when_it_stops(
    env: OperatorEnv, tmp_path: Path
) -> None:
    """Two `qmlops operator --peering` processes meet in kopf's ClusterKopfPeering (its CRDs and the
    object as deploy/peering installs them): the one with the higher priority reconciles, the other
    waits (paused from its start), and takes over when the first stops."""
    env.kube.register_peering_crds()
    await env.client.create({"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "qmlops"}})
    kubeconfig = harness_kubeconfig(env, tmp_path)
    processes: dict[str, asyncio.subprocess.Process] = {}
    standby_metrics = free_port()
    said: list[str] = []  # the standby's output, shown when the decisions are not as expected
    try:
        for role, priority, metrics_port in (("active", 200, 0), ("standby", 100, standby_metrics)):
            command = [sys.executable, "-m", "controller", "operator", "--repo", str(env.remote)]
            command += ["--workdir", str(tmp_path / role), "--kubeconfig", str(kubeconfig)]
            command += ["--webhook-port", "0", "--metrics-port", str(metrics_port), "--liveness-port", "0"]
            command += ["--peering", "--peering-priority", str(priority), "--peering-lifetime", "600"]
            processes[role] = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            await env.until(functools.partial(peers_are, env, len(processes)), 120)
        assert peer_priorities(env) == [100, 200]
        await port_open("127.0.0.1", standby_metrics)

        await env.client.create(tiny_model())
        await env.until_phase("Ready", timeout=180)
        assert await iterations_run(standby_metrics) == 0, "the standby trained nothing"
        processes["active"].send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(processes["active"].communicate(), 60)
        assert processes["active"].returncode == 0, rest.decode(errors="replace")[-2000:]

        await until_said(processes["standby"], "Resuming operations", said)
        assert peer_priorities(env) == [100], "the stopped one left the peering"
        await env.client.create(tiny_model("wine-tiny"))
        await env.until_phase("Ready", "wine-tiny", timeout=180)
        assert await iterations_run(standby_metrics) >= 1, "the standby took over"
        processes["standby"].send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(processes["standby"].communicate(), 60)
        said.append(rest.decode(errors="replace"))
        assert processes["standby"].returncode == 0
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert env.decisions() == ["registered", "gate-passed", "promoted"], "".join(said)[-6000:]
    assert env.decisions("wine-tiny") == ["registered", "gate-passed", "promoted"]
    used = {call for call in env.kube.calls("kopf/") if call[0] == "kopf.dev"}
    assert used == allowed_by_cluster_role(DEPLOY / "peering"), "deploy/peering grants exactly what kopf uses"
