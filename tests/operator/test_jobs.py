"""Trainings as Kubernetes Jobs (``--executor jobs``), end to end against the harness with the kubelet
stand-in running each Job's pod as a ``qmlops train-job`` process: a model trains in a Job to Ready, and
a 4-cell sweep's cells each in a Job, ``parallelism`` at a time;
a pod evicted mid-run is replaced and resumes from its checkpoint; an operator restarted while its Job
runs adopts it and starts no second one; a deleted model's Job goes; an OOMKilled pod is a failure
that says so. A pipeline's evaluations run as ``qmlops evaluate-job`` Jobs and are recorded exactly as
in-process ones; a result that is not the evaluated version's is refused. Every call the operator and
the Jobs make is allowed by deploy/ (and every rule used)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from controller.api.quantummodel import QuantumModel
from controller.engine import training
from controller.engine.reconcile.executor import EvaluationRequest, InProcess, evaluation_key
from controller.operator import jobs
from controller.operator.checkpoints import FILES_ANNOTATION
from tests.operator.operator_env import IBM_TOKEN, NAMESPACE, OperatorEnv, git, make_remote, secret, tiny_model
from tests.operator.test_pipelines import sweep
from tests.support.kube import Client, KubeApi
from tests.support.kubelet import Kubelet

pytestmark = pytest.mark.slow
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
IMAGE = "ghcr.io/qmlops/qmlops:test"
JOBS = {"executor": "jobs", "job_image": IMAGE}


def rules(path: Path, kind: str) -> set[tuple[str, str, str]]:
    docs = YAML(typ="safe").load_all(path.read_text())
    role = next(d for d in docs if d and d["kind"] == kind)
    return {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }


def operator_rules() -> set[tuple[str, str, str]]:
    return rules(DEPLOY / "rbac.yaml", "ClusterRole") | rules(DEPLOY / "jobs" / "rbac.yaml", "ClusterRole")


def training_rules() -> set[tuple[str, str, str]]:
    return rules(DEPLOY / "jobs" / "namespace" / "rbac.yaml", "Role")


@pytest.fixture
async def env(kube: KubeApi, client: Client, tmp_path: Path) -> AsyncIterator[OperatorEnv]:
    kube.register_crds()
    await client.namespace(NAMESPACE)
    yield OperatorEnv(kube, client, make_remote(tmp_path), tmp_path)
    # whatever a test did, every call the operator made is allowed by its ClusterRoles, and every call
    # a Job made is in its namespace and allowed by the training Role
    used = kube.calls("kopf/", "qmlops-operator/")
    assert used <= operator_rules(), used - operator_rules()
    by_jobs = kube.calls_in("qmlops-training/")
    assert {namespace for namespace, *_ in by_jobs} <= {NAMESPACE}
    assert {call[1:] for call in by_jobs} <= training_rules()


@pytest.fixture
async def kubelet(kube: KubeApi, tmp_path: Path) -> AsyncIterator[Kubelet]:
    async with Kubelet(kube, tmp_path / "kubelet") as running:
        yield running


def job_of(env: OperatorEnv, name: str = "iris-tiny") -> dict[str, Any] | None:
    found = [j for j in env.kube.list("Job", NAMESPACE) if j["metadata"]["labels"].get(jobs.MODEL_LABEL) == name]
    assert len(found) <= 1, [j["metadata"]["name"] for j in found]
    return found[0] if found else None


def version_manifest(env: OperatorEnv, number: int, name: str = "iris-tiny") -> dict[str, Any]:
    path = f"main:registry/{NAMESPACE}/{name}/versions/{number}.json"
    return dict(json.loads(git("--git-dir", str(env.remote), "show", path)))


def checkpoint_kept(env: OperatorEnv, job: str) -> bool:
    configmap = env.kube.read("ConfigMap", NAMESPACE, job) or {}
    return FILES_ANNOTATION in (configmap.get("metadata", {}).get("annotations") or {})


async def test_a_model_trains_in_a_job_and_the_operator_registers_it(env: OperatorEnv, kubelet: Kubelet) -> None:
    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    model = tiny_model(training={**tiny_model()["spec"]["training"], "credentialsSecret": "ibm-quantum"})
    async with env.operator(**JOBS) as runtime:
        await env.client.create(model)
        job = await env.until(lambda: job_of(env))
        name = job["metadata"]["name"]
        await env.until(lambda: (env.status().get("training") or {}).get("job") == name, 60)
        status = await env.until_phase("Ready")
        assert status["champion"]["version"] == 1
        assert env.decisions() == ["registered", "gate-passed", "promoted"]
        # what the Job ran: qmlops itself, its arguments no shell string, the Secret mounted, not copied
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["qmlops"] and container["args"][0] == "train-job"
        assert container["image"] == IMAGE and pod["serviceAccountName"] == "qmlops-training"
        assert IBM_TOKEN not in json.dumps(job) and "git" not in json.dumps(pod).lower()
        assert [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v] == ["ibm-quantum"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        # the artifact the operator registered is the one the Job left, and its Job and ConfigMap went
        assert version_manifest(env, 1)["artifact"]["usage"]["resumes"] == 0
        await env.until(lambda: job_of(env) is None and env.kube.read("ConfigMap", NAMESPACE, name) is None, 30)
        expected = {"TrainingJobStarted", "TrainingJobSucceeded", "Registered", "Promoted"}
        await env.until(lambda: expected <= set(env.reasons()), 30)
        assert runtime.metrics.jobs_started._value.get() == 1
        assert runtime.metrics.iterations._value.get() == 0, "the operator itself trained nothing"
    assert kubelet.started == [f"{name}-0"]
    # the Job used exactly its Role: its ConfigMap read, then patched
    assert {call[1:] for call in env.kube.calls_in("qmlops-training/")} == training_rules()


async def test_an_evicted_pod_is_replaced_and_resumes_from_its_checkpoint(env: OperatorEnv, kubelet: Kubelet) -> None:
    async with env.operator(**JOBS) as runtime:
        await env.client.create(tiny_model(iterations=60))
        job = await env.until(lambda: job_of(env))
        name = job["metadata"]["name"]
        await env.until(lambda: checkpoint_kept(env, name), 120)
        kubelet.evict(name, NAMESPACE)
        status = await env.until_phase("Ready", timeout=180)
        assert status["champion"]["version"] == 1
        assert kubelet.started == [f"{name}-0", f"{name}-1"]
        assert "resuming from the checkpoint" in kubelet.log(f"{name}-1")
        assert version_manifest(env, 1)["artifact"]["usage"]["resumes"] >= 1
        assert env.decisions() == ["registered", "gate-passed", "promoted"]
        await env.until(lambda: "TrainingJobRetried" in env.reasons(), 30)
        retried = next(e for e in env.events() if e["reason"] == "TrainingJobRetried")
        assert "evicted" in retried["message"]
        assert runtime.metrics.jobs_retried.labels(reason="Evicted")._value.get() == 1
    # with a retry, every rule the jobs executor adds to the operator's rights is used
    jobs_rules = rules(DEPLOY / "jobs" / "rbac.yaml", "ClusterRole")
    assert jobs_rules - env.kube.calls("qmlops-operator/", "kopf/") == set()


async def test_an_operator_restarted_while_its_job_runs_adopts_it(env: OperatorEnv, kubelet: Kubelet) -> None:
    async with env.operator("pod-a", **JOBS):
        await env.client.create(tiny_model(iterations=40))
        job = await env.until(lambda: job_of(env))
        await env.until(lambda: kubelet.started, 60)
    name = job["metadata"]["name"]
    async with env.operator("pod-b", **JOBS) as runtime:
        status = await env.until_phase("Ready", timeout=180)
        assert status["champion"]["version"] == 1
        assert runtime.metrics.jobs_started._value.get() == 0, "the running Job was adopted"
    assert kubelet.started == [f"{name}-0"]
    assert env.decisions() == ["registered", "gate-passed", "promoted"]


async def test_deleting_a_model_deletes_its_running_job(env: OperatorEnv, kubelet: Kubelet) -> None:
    async with env.operator(**JOBS):
        await env.client.create(tiny_model(iterations=200))
        job = await env.until(lambda: job_of(env))
        await env.until(lambda: kubelet.pods, 60)
        await env.client.delete("QuantumModel", NAMESPACE, "iris-tiny")
        await env.until(lambda: env.model() is None and job_of(env) is None, 60)
        await env.until(lambda: not kubelet.pods, 30)
        assert env.kube.read("ConfigMap", NAMESPACE, job["metadata"]["name"]) is None
    assert env.decisions() == []


async def test_an_oom_killed_pod_fails_the_training_and_says_why(env: OperatorEnv, kubelet: Kubelet) -> None:
    async with env.operator(**JOBS, job_backoff_limit=0) as runtime:
        await env.client.create(tiny_model(iterations=200))
        job = await env.until(lambda: job_of(env))
        name = job["metadata"]["name"]
        await env.until(lambda: checkpoint_kept(env, name), 120)
        kubelet.oom_kill(name, NAMESPACE)
        await env.until(lambda: env.status().get("phase") == "Failed", 60)
        assert "OOMKilled" in json.dumps(env.status()["conditions"])
        assert env.decisions() == ["failed"]
        await env.until(lambda: "TrainingJobFailed" in env.reasons(), 30)
        assert runtime.metrics.jobs_failed.labels(reason="OOMKilled")._value.get() == 1


def cell_sweep() -> dict[str, Any]:
    """Four cells (none the model's own spec), two at a time."""
    return {
        "apiVersion": "qmlops.io/v1alpha1",
        "kind": "QuantumPipeline",
        "metadata": {"name": "sweep", "namespace": NAMESPACE},
        "spec": {
            "model": "iris-tiny",
            "steps": [
                {
                    "name": "sweep",
                    "train": {
                        "matrix": {"training.optimizer.maxIterations": [5, 6], "training.seed": [8, 9]},
                        "parallelism": 2,
                    },
                },
                {"name": "noise", "dependsOn": ["sweep"], "evaluate": {"backends": ["local:aer"], "shots": 128}},
                {"name": "pick", "dependsOn": ["noise"], "select": {"metric": "accuracy", "mode": "max"}},
                {"name": "promote", "dependsOn": ["pick"], "promote": {}},
            ],
        },
    }


async def test_a_four_cell_sweep_trains_each_cell_in_a_job_two_at_a_time(env: OperatorEnv, kubelet: Kubelet) -> None:
    async with env.operator(**JOBS) as runtime:
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
        assert kubelet.peak == 1 and len(kubelet.started) == 1
        kubelet.peak = 0
        await env.client.create(cell_sweep())

        def phase() -> str:
            return str(((env.kube.read("QuantumPipeline", NAMESPACE, "sweep") or {}).get("status") or {}).get("phase"))

        await env.until(lambda: phase() == "Succeeded", 300)
        cells = [p for p in kubelet.started[1:] if "-eval-" not in p]
        assert len(cells) == 4 and len({p.rsplit("-", 1)[0] for p in cells}) == 4, cells
        assert len([p for p in kubelet.started if "-eval-" in p]) == 4, "each cell's version evaluated in a Job"
        assert kubelet.peak == 2, "parallelism: 2"
        assert runtime.metrics.jobs_started._value.get() == 5
        assert runtime.metrics.iterations._value.get() == 0, "the operator itself trained nothing"
        ledger = [
            json.loads(line)
            for line in git("--git-dir", str(env.remote), "show", f"main:registry/{NAMESPACE}/iris-tiny/ledger.jsonl")
            .strip()
            .splitlines()
        ]
        registered = [e for e in ledger if e["kind"] == "registered"]
        assert len(registered) == 5 and len({e["data"]["artifactDigest"] for e in registered}) == 5
        assert [e for e in ledger if e["kind"] == "run-finished"]


# --- evaluations --------------------------------------------------------------------------------------


def evaluation_objects(env: OperatorEnv, kind: str = "Job") -> list[dict[str, Any]]:
    return [
        o
        for o in env.kube.list(kind, NAMESPACE)
        if (o["metadata"].get("labels") or {}).get(jobs.COMPONENT_LABEL) == jobs.EVALUATION
    ]


def pipeline_phase(env: OperatorEnv, name: str = "sweep") -> str:
    return str(((env.kube.read("QuantumPipeline", NAMESPACE, name) or {}).get("status") or {}).get("phase"))


def model_ledger(env: OperatorEnv) -> list[dict[str, Any]]:
    text = git("--git-dir", str(env.remote), "show", f"main:registry/{NAMESPACE}/iris-tiny/ledger.jsonl")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_a_pipelines_evaluations_run_in_jobs_and_are_recorded_as_in_process(
    env: OperatorEnv, kubelet: Kubelet
) -> None:
    ended: dict[str, dict[str, Any]] = {}

    async def keep(namespace: str, name: str) -> None:  # each evaluation's Job as its pod ended
        job = env.kube.read("Job", namespace, name)
        if job is not None and job["metadata"]["labels"].get(jobs.COMPONENT_LABEL) == jobs.EVALUATION:
            ended[name] = job

    kubelet.on_exit = keep
    async with env.operator(**JOBS) as runtime:
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
        await env.client.create(sweep())  # 2 cells, each version scored on local:aer with 128 shots
        await env.until(lambda: pipeline_phase(env) == "Succeeded", 300)
        # each evaluation's Job and ConfigMap go once its `evaluated` entry is pushed
        await env.until(lambda: not evaluation_objects(env) and not evaluation_objects(env, "ConfigMap"), 30)
        assert runtime.metrics.evaluation_jobs_started._value.get() == 2
        assert runtime.metrics.iterations._value.get() == 0, "the operator itself trained nothing"
    scored = [p for p in kubelet.started if "-eval-" in p]
    assert len(scored) == 2 and sorted(f"{name}-0" for name in ended) == sorted(scored)
    for job in ended.values():  # qmlops itself, locked down as a training's Job, owned by the model
        labels = job["metadata"]["labels"]
        assert (labels[jobs.OWNER_LABEL], labels[jobs.MODEL_LABEL]) == ("pipeline", "iris-tiny")
        assert job["metadata"]["ownerReferences"][0]["kind"] == "QuantumModel"
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["qmlops"]
        assert container["args"] == [
            "evaluate-job",
            "--namespace",
            NAMESPACE,
            "--configmap",
            job["metadata"]["name"],
            "--evaluation-key",
            labels[jobs.EVALUATION_KEY_LABEL],
        ]
        assert pod["serviceAccountName"] == "qmlops-training" and container["image"] == IMAGE
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # what the operator recorded is what an in-process evaluation of the same version records
    entries = [e for e in model_ledger(env) if e["kind"] == "evaluated"]
    assert len(entries) == 2
    spec = QuantumModel.model_validate(tiny_model()).spec  # a cell's optimizer settings do not enter scoring
    for entry in entries:
        manifest = version_manifest(env, entry["version"])
        request = EvaluationRequest(
            namespace=NAMESPACE,
            name="iris-tiny",
            version=entry["version"],
            version_digest=manifest["digest"],
            artifact=manifest["artifact"],
            spec=spec,
            backend="local:aer",
            shots=128,
            key=evaluation_key(manifest["digest"], "local:aer", 128),
            repo_root=env.tmp,
            credentials=None,
            budget_used_seconds=0.0,
        )
        here = InProcess(training.train).evaluate(request)
        assert isinstance(here, dict)
        metrics = {k: v for k, v in here["metrics"].items() if isinstance(v, int | float)}
        recorded = {k: v for k, v in entry["data"].items() if k != "pipeline"}
        assert recorded == {**here, "metrics": metrics, "versionDigest": manifest["digest"]}
        assert entry["data"]["pipeline"]["step"] == "noise"


async def test_an_evaluation_result_of_another_version_is_refused(env: OperatorEnv, kubelet: Kubelet) -> None:
    async def swap(namespace: str, name: str) -> None:
        """The result the pod left rewritten as if of version 1, its SHA-256 recomputed to match."""
        configmap = env.kube.read("ConfigMap", namespace, name) or {}
        encoded = (configmap.get("binaryData") or {}).get(jobs.RESULT_KEY)
        if not name.endswith("-eval") or not encoded:
            return
        result = json.loads(base64.b64decode(encoded))
        result["versionDigest"] = version_manifest(env, 1)["digest"]
        raw = json.dumps(result).encode()
        patch = {
            "metadata": {"annotations": {jobs.RESULT_DIGEST: hashlib.sha256(raw).hexdigest()}},
            "binaryData": {jobs.RESULT_KEY: base64.b64encode(raw).decode()},
        }
        await env.client.patch("ConfigMap", namespace, name, patch)

    kubelet.on_exit = swap
    one_cell = sweep(steps=[*sweep()["spec"]["steps"][:2]])
    one_cell["spec"]["steps"][0]["train"]["matrix"] = {"training.optimizer.maxIterations": [3]}
    async with env.operator(**JOBS):
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
        await env.client.create(one_cell)
        await env.until(lambda: pipeline_phase(env) in ("Failed", "Succeeded"), 300)
        assert pipeline_phase(env) == "Failed"
        await env.until(lambda: not evaluation_objects(env) and not evaluation_objects(env, "ConfigMap"), 30)
    kinds = [e["kind"] for e in model_ledger(env)]
    assert "evaluated" not in kinds and kinds[-2:] == ["step-failed", "run-finished"]
    failed = next(e for e in model_ledger(env) if e["kind"] == "step-failed")
    assert "is not of version 2 on local:aer" in failed["message"], failed["message"]
    assert [p for p in kubelet.started if "-eval-" in p], "the evaluation ran in a Job"
