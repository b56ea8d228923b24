"""Trainings as Kubernetes Jobs (``--executor jobs``), end to end against the harness with the kubelet
stand-in running each Job's pod as a ``qmlops train-job`` process: ``qmlops operator --executor jobs``
runs with no other flag; a model trains in a Job to Ready, and a 4-cell sweep's cells each in a Job,
``parallelism`` at a time; a pod evicted mid-run is replaced and resumes from its checkpoint; an
operator restarted while its Job runs adopts it and starts no second one; a deleted model's Job goes;
why a pod ended is the training's failure, in its class: OOMKilled (recorded with what its jobs spent),
past its deadline, a crashed trainer stall and say so (never with the pod's output), evicted past the
Job's backoffLimit is replaced and resumes; an image that cannot be pulled stalls the training until
it can, in the same Job, and an operator with another image replaces that Job; a pipeline's cell or
evaluation whose image cannot be pulled says so on the pipeline until it can. A training stopped
while it runs as a Job (superseded by a spec change, its model deleted, its pipeline deleted) records
what it spent, once, also when the operator stopped before it could (the next one finds it in the
cluster).
A cell still training when its step fails finishes and is registered first (failFast as in-process).
A pipeline's evaluations run as ``qmlops evaluate-job`` Jobs and are recorded exactly as in-process
ones; one failing waits for the others (a result that is not the evaluated version's is refused:
test_jobs_parts.py's test_only_this_evaluations_untampered_result_is_accepted, the same failure path).
Every call the operator and the Jobs make is allowed by deploy/ (and every rule used)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from controller.api.quantummodel import QuantumModelSpec
from controller.engine import training
from controller.engine.reconcile.executor import EvaluationRequest, InProcess, evaluation_key
from controller.operator import checkpoints, jobs
from controller.operator.checkpoints import FILES_ANNOTATION
from controller.operator.settings import RELEASE_IMAGE
from tests.operator.operator_env import IBM_TOKEN, NAMESPACE, OperatorEnv, git, make_remote, secret, tiny_model
from tests.operator.test_end_to_end import Closing, harness_kubeconfig, on_ibm, run_command
from tests.operator.test_pipelines import sweep
from tests.support import ibm_image
from tests.support.kube import Client, KubeApi, free_port
from tests.support.kubelet import Kubelet
from tests.training.standin import installed

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


async def test_qmlops_operator_executor_jobs_with_default_flags_trains_in_a_job(
    env: OperatorEnv, kubelet: Kubelet, tmp_path: Path
) -> None:
    """A newcomer's run: `qmlops operator --executor jobs` and nothing else (but where the repository
    and the cluster are, and the metrics and liveness ports moved off their fixed defaults, which
    another process on a shared machine may hold) starts, runs the training in a Job of this
    release's image, and the model is Ready."""
    environment = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HOME": str(tmp_path / "home")}
    for name in ("QMLOPS_WORKDIR", "QMLOPS_IMAGE", "QMLOPS_EXECUTOR"):
        environment.pop(name, None)
    args = ["--repo", str(env.remote), "--kubeconfig", str(harness_kubeconfig(env, tmp_path)), "--executor", "jobs"]
    args += ["--metrics-port", str(free_port()), "--liveness-port", str(free_port())]
    text = await run_command(env, *args, environment=environment)
    assert "Traceback" not in text, text[-3000:]
    assert env.decisions() == ["registered", "gate-passed", "promoted"]
    (pod,) = kubelet.started
    assert kubelet.images[pod] == RELEASE_IMAGE


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


IBM_IMAGE = "ghcr.io/qmlops/qmlops:ibm-standin"  # its qmlops trains on IBM stood in, billing each job
STANDIN = [sys.executable, str(Path(ibm_image.__file__))]


def journal_jobs(env: OperatorEnv, job: str) -> int:
    """The primitive jobs the checkpoint journal in ``job``'s ConfigMap records."""
    files = checkpoints.decode(env.kube.read("ConfigMap", NAMESPACE, job) or {}) or {}
    journal = next((content for path, content in files.items() if path.endswith("journal.jsonl")), b"")
    return sum(1 for line in journal.splitlines() if line.startswith(b'{"entry"'))


def other_job(env: OperatorEnv, than: str) -> dict[str, Any] | None:
    """The model's training Job that is not ``than``."""
    return next((j for j in env.kube.list("Job", NAMESPACE) if j["metadata"]["name"] != than), None)


def not_recorded(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The operator's warnings that stopped trainings could not be recorded."""
    return [r.getMessage() for r in caplog.records if "stopped trainings not recorded" in r.getMessage()]


class RefusingRemote:
    """The remote refuses every push while ``refusing`` (a pre-receive hook, as a protected branch
    does); ``refused`` counts the pushes it refused."""

    def __init__(self, remote: Path) -> None:
        self.flag, self.log = remote / "refusing", remote / "refused.log"
        hook = remote / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\nif [ -e '{self.flag}' ]; then echo no >> '{self.log}'; exit 1; fi\n")
        hook.chmod(0o755)

    @property
    def refusing(self) -> bool:
        return self.flag.exists()

    @refusing.setter
    def refusing(self, value: bool) -> None:
        if value:
            self.flag.touch()
        else:
            self.flag.unlink(missing_ok=True)

    @property
    def refused(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0


async def test_a_job_stopped_midway_records_what_it_spent_once_superseded_or_its_model_deleted(
    env: OperatorEnv, kubelet: Kubelet, caplog: pytest.LogCaptureFixture
) -> None:
    """A training stopped while it runs as a Job is a `stopped` entry with what its checkpoint journal
    says its jobs spent, as an in-process one: its spec changed (superseded: its Job stopped, the new
    training started) while the remote refused pushes, and the operator stopped before it could record
    it: the next operator finds it in the cluster (its ConfigMap without its Job) and records it, once;
    then the new one's model deleted; each pushed before its ConfigMap goes, and each one's Runtime
    session closed."""
    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    kubelet.entry_points[IBM_IMAGE] = STANDIN
    ibm = Closing()
    remote = RefusingRemote(env.remote)
    with installed(ibm):
        async with env.operator("pod-a", executor="jobs", job_image=IBM_IMAGE):
            await env.client.create(on_ibm(iterations=100))
            first = (await env.until(lambda: job_of(env)))["metadata"]
            await env.until(lambda: journal_jobs(env, first["name"]) >= 2, 180)
            remote.refusing = True
            longer = {"spec": {"training": {"optimizer": {"maxIterations": 101}}}}
            await env.client.patch("QuantumModel", NAMESPACE, "iris-tiny", longer)
            second = (await env.until(lambda: other_job(env, first["name"])))["metadata"]
            # it stopped the first Job, then could not record it; and tries again after the backoff
            await env.until(lambda: len(not_recorded(caplog)) >= 2, 120)
            assert remote.refused and env.kube.read("Job", NAMESPACE, first["name"]) is None
        assert env.decisions() == [] and env.kube.read("ConfigMap", NAMESPACE, first["name"]) is not None
        seen = journal_jobs(env, first["name"])
        remote.refusing = False
        async with env.operator("pod-b", executor="jobs", job_image=IBM_IMAGE) as runtime:
            await env.until(lambda: env.decisions() == ["stopped"], 120)
            await env.until(lambda: env.kube.read("ConfigMap", NAMESPACE, first["name"]) is None, 30)
            assert (job_of(env) or {})["metadata"]["uid"] == second["uid"], "the second training's Job adopted"
            await env.until(lambda: journal_jobs(env, second["name"]) >= 2, 180)
            await env.client.delete("QuantumModel", NAMESPACE, "iris-tiny")
            await env.until(lambda: env.model() is None, 60)
            assert job_of(env) is None and runtime.metrics.jobs_started._value.get() == 0
    assert env.decisions() == ["stopped", "stopped"]
    entries = [e for e in ledger(env) if e["kind"] == "stopped"]
    assert [e["data"]["trainingKey"] for e in entries] == [m["labels"][jobs.KEY_LABEL] for m in (first, second)]
    for entry in entries:  # each what its journal said, billed by IBM (stood in) at 1.5 s a job
        usage = entry["data"]["usage"]
        assert usage["primitiveJobs"] >= 2 and usage["qpuSeconds"] == ibm_image.SECONDS_PER_JOB * usage["primitiveJobs"]
        assert entry["data"]["specDigest"].startswith("sha256:") and entry["data"]["reason"]
    assert entries[0]["data"]["usage"]["primitiveJobs"] == seen
    # each training's Runtime session closed once (each pod's stand-in numbers its sessions from 1): the
    # first by the operator that stopped it (its ConfigMap says so to the next one)
    assert ibm.closed == ["standin-session-1", "standin-session-1"]
    assert [p.rsplit("-", 1)[0] for p in kubelet.started] == [first["name"], second["name"]]


def cell_job(env: OperatorEnv) -> dict[str, Any] | None:
    """A pipeline cell's training Job."""
    return next(
        (j for j in env.kube.list("Job", NAMESPACE) if j["metadata"]["labels"].get(jobs.OWNER_LABEL) == "pipeline"),
        None,
    )


async def test_a_pipeline_deleted_while_its_cell_trains_in_a_job_stops_it_and_records_what_it_spent(
    env: OperatorEnv, kubelet: Kubelet, caplog: pytest.LogCaptureFixture
) -> None:
    """As in-process: deleting a pipeline stops its cell's Job, and what the cell's jobs spent (its
    checkpoint journal, billed by IBM stood in) is a `stopped` entry naming the pipeline and the cell,
    pushed before the pipeline goes (deleted while Git is out of reach, the pipeline waits for Git to
    come back); the cell's checkpoint (its ConfigMap) stays with the model. The pipeline created again
    resumes the cell from it; deleted while no operator runs, the next operator stops its Job and
    records what it spent since, before the pipeline goes. Each second once."""
    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    kubelet.entry_points[IBM_IMAGE] = STANDIN
    model = on_ibm(iterations=4)
    model["spec"]["training"] = {**tiny_model()["spec"]["training"], "credentialsSecret": "ibm-quantum"}
    on_ibm_cell = sweep(steps=sweep()["spec"]["steps"][:2])
    on_ibm_cell["spec"]["steps"][0]["train"]["matrix"] = {
        "training.optimizer.maxIterations": [100],
        "training.backend": ["ibm:fake_manila"],
        "training.shots": [64],
    }

    def stopped() -> list[dict[str, Any]]:
        return [e for e in ledger(env) if e["kind"] == "stopped"]

    def gone() -> bool:
        return env.kube.read("QuantumPipeline", NAMESPACE, "sweep") is None

    with installed(Closing()):
        async with env.operator("pod-a", executor="jobs", job_image=IBM_IMAGE):
            await env.client.create(model)
            await env.until_phase("Ready")
            await env.client.create(on_ibm_cell)
            name = (await env.until(lambda: cell_job(env)))["metadata"]["name"]
            await env.until(lambda: journal_jobs(env, name) >= 2, 180)
            hidden = env.remote.with_name("gitops-away.git")
            env.remote.rename(hidden)  # Git out of reach
            try:
                await env.client.delete("QuantumPipeline", NAMESPACE, "sweep")
                await env.until(lambda: "sweep: its Jobs not stopped: GitError" in caplog.text, 60)
                await env.until(lambda: caplog.text.count("sweep: its Jobs not stopped") >= 2, 60)
                assert not gone(), "the pipeline waits for Git: what its cell spent cannot be recorded yet"
            finally:
                hidden.rename(env.remote)
            await env.until(gone, 60)
            (first,) = stopped()  # pushed before the pipeline went
            assert env.kube.read("Job", NAMESPACE, name) is None
            await env.until(lambda: (NAMESPACE, name) not in kubelet.pods, 30)
            assert env.kube.read("ConfigMap", NAMESPACE, name) is not None, "its checkpoint kept for the model"
            await env.until(lambda: "Stopped" in env.reasons("sweep"), 30)
            spent = journal_jobs(env, name)
            await env.client.create(on_ibm_cell)  # again: its cell resumes from the checkpoint kept
            await env.until(lambda: (NAMESPACE, name) in kubelet.pods and journal_jobs(env, name) >= spent + 2, 180)
        await env.client.delete("QuantumPipeline", NAMESPACE, "sweep")  # while no operator runs
        assert not gone(), "its finalizer holds it"
        async with env.operator("pod-b", executor="jobs", job_image=IBM_IMAGE):
            await env.until(gone, 60)
            assert len(stopped()) == 2, "recorded before the pipeline went"
            assert env.kube.read("Job", NAMESPACE, name) is None
            await env.until(lambda: (NAMESPACE, name) not in kubelet.pods, 30)
            spent = journal_jobs(env, name)
            await env.client.delete("QuantumModel", NAMESPACE, "iris-tiny")
            await env.until(lambda: env.model() is None, 60)
    assert first["data"]["pipeline"]["name"] == "sweep" and first["data"]["pipeline"]["cell"]
    assert first["data"]["trainingKey"][:12] == name.rsplit("-", 1)[1]
    usage = first["data"]["usage"]
    assert usage["primitiveJobs"] >= 2 and usage["qpuSeconds"] == ibm_image.SECONDS_PER_JOB * usage["primitiveJobs"]
    second = stopped()[1]
    assert second["data"]["pipeline"] == first["data"]["pipeline"], "the run left open went on"
    # each second once: every entry holds the training's cumulative spending (the resumed pod's journal
    # goes on from the first's), so each adds only what was spent since; the model's deletion records
    # only what the pod spent after it was read, if anything
    counted = [e["data"]["usage"]["primitiveJobs"] for e in stopped()]
    assert counted == sorted(set(counted)) and counted[-1] == spent and len(counted) in (2, 3), counted
    assert kubelet.started[1:] == [f"{name}-0", f"{name}-0"], "one cell, in two Jobs: nothing else ran"


def ledger(env: OperatorEnv, name: str = "iris-tiny") -> list[dict[str, Any]]:
    path = f"main:registry/{NAMESPACE}/{name}/ledger.jsonl"
    return [json.loads(line) for line in git("--git-dir", str(env.remote), "show", path).strip().splitlines()]


def stalled_message(env: OperatorEnv) -> str:
    condition = env.condition("iris-tiny", "Stalled")
    assert condition.get("status") == "True", env.status()
    return str(condition.get("message"))


async def test_an_oom_killed_pod_fails_the_training_until_its_memory_changes(
    env: OperatorEnv, kubelet: Kubelet
) -> None:
    """On IBM (stood in: each job billed): the failure is recorded with what the Job's jobs spent, read
    from its checkpoint journal, as a trainer's own failure keeps it."""
    await env.client.create(secret("ibm-quantum", token=IBM_TOKEN, instance="crn:v1:bluemix:public:quantum:x"))
    kubelet.entry_points[IBM_IMAGE] = STANDIN
    model = on_ibm(iterations=100)
    model["spec"]["training"]["resources"] = {"memory": "1Gi"}
    with installed(Closing()):
        async with env.operator(executor="jobs", job_image=IBM_IMAGE, job_backoff_limit=0) as runtime:
            await env.client.create(model)
            job = await env.until(lambda: job_of(env))
            name = job["metadata"]["name"]
            await env.until(lambda: journal_jobs(env, name) >= 2, 120)
            kubelet.oom_kill(name, NAMESPACE)
            await env.until(lambda: env.status().get("phase") == "Failed", 60)
            assert "OOMKilled" in stalled_message(env) and "spec.training.resources.memory" in stalled_message(env)
            assert env.decisions() == ["failed"]
            (failed,) = [e for e in ledger(env) if e["kind"] == "failed"]
            usage = failed["data"]["usage"]
            assert usage["primitiveJobs"] >= 2
            assert usage["qpuSeconds"] == ibm_image.SECONDS_PER_JOB * usage["primitiveJobs"]
            await env.until(lambda: "TrainingJobFailed" in env.reasons(), 30)
            assert runtime.metrics.jobs_failed.labels(reason="OOMKilled")._value.get() == 1
            # its failure recorded, the failed Job and its ConfigMap go
            await env.until(lambda: job_of(env) is None and env.kube.read("ConfigMap", NAMESPACE, name) is None, 30)
            # more memory: the same training (same key) is tried again, in a new Job
            more = {"spec": {"training": {"resources": {"memory": "2Gi"}}}}
            await env.client.patch("QuantumModel", NAMESPACE, "iris-tiny", more)
            again = await env.until(lambda: job_of(env), 60)
            assert again["metadata"]["name"] == name
            assert again["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {"memory": "2Gi"}


async def test_a_crashed_trainer_fails_the_training_naming_its_exit_code_not_its_output(
    env: OperatorEnv, kubelet: Kubelet
) -> None:
    async with env.operator(**JOBS, job_backoff_limit=1):
        await env.client.create(tiny_model(iterations=200))
        job = await env.until(lambda: job_of(env))
        name = job["metadata"]["name"]
        await env.until(lambda: "iteration 1 of 200" in kubelet.log(f"{name}-0"), 120)  # it said something
        kubelet.crash(name, NAMESPACE, exit_code=2)
        await env.until(lambda: f"{name}-1" in kubelet.started and (NAMESPACE, name) in kubelet.pods, 60)
        kubelet.crash(name, NAMESPACE, exit_code=2)
        await env.until(lambda: env.status().get("phase") == "Failed", 60)
        message = stalled_message(env)
        assert "exited with an error, exit code 2" in message and "in each of its 2 pods" in message
        assert f"kubectl logs job/{name} -n {NAMESPACE}" in message
        (failed,) = [e for e in ledger(env) if e["kind"] == "failed"]
        assert f"kubectl logs job/{name}" in failed["message"]
        # the pods' own output is not quoted anywhere
        said = kubelet.log(f"{name}-0")
        for line in filter(None, said.splitlines()):
            assert line not in json.dumps(env.status()) and line not in failed["message"]
        assert env.decisions() == ["failed"]


async def test_a_job_past_its_deadline_fails_the_training_saying_so(env: OperatorEnv, kubelet: Kubelet) -> None:
    async with env.operator(**JOBS) as runtime:
        await env.client.create(tiny_model(iterations=200))
        job = await env.until(lambda: job_of(env))
        name = job["metadata"]["name"]
        assert job["spec"]["activeDeadlineSeconds"] == 6 * 3600 + jobs.DEADLINE_SLACK_SECONDS  # the default timeout
        await env.until(lambda: (NAMESPACE, name) in kubelet.pods, 60)
        await env.client.patch("Job", NAMESPACE, name, {"spec": {"activeDeadlineSeconds": 1}})
        await env.until(lambda: env.status().get("phase") == "Failed", 60)
        assert "DeadlineExceeded" in stalled_message(env) and "spec.training.timeout" in stalled_message(env)
        assert env.decisions() == ["failed"]
        await env.until(lambda: runtime.metrics.jobs_failed.labels(reason="DeadlineExceeded")._value.get() == 1, 30)
        assert kubelet.started == [f"{name}-0"], "a Job past its deadline starts no other pod"


def stalled_on_image(env: OperatorEnv) -> bool:
    condition = env.condition("iris-tiny", "Stalled")
    return condition.get("status") == "True" and "ErrImagePull" in str(condition.get("message"))


async def test_a_job_whose_image_cannot_be_pulled_stalls_and_goes_on_once_it_can(
    env: OperatorEnv, kubelet: Kubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kubelet keeps pulling an image it cannot find: the training says why (Stalled) but has not
    failed; once the image is there (pushed, its registry back) the same Job's pod runs and the model
    is Ready, with no spec change and no second Job."""
    monkeypatch.setattr(jobs, "PENDING_GRACE_SECONDS", 2.0)
    kubelet.missing_images.add(IMAGE)
    async with env.operator(**JOBS) as runtime:
        await env.client.create(tiny_model())
        job = await env.until(lambda: job_of(env))
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        await env.until(lambda: stalled_on_image(env), 60)
        message = stalled_message(env)
        assert "--job-image" in message and "goes on by itself" in message
        assert env.decisions() == [], "nothing ran: no failure is recorded"
        assert (job_of(env) or {})["metadata"]["uid"] == uid, "the Job stays, its pod pulling"
        assert kubelet.started == []
        kubelet.missing_images.discard(IMAGE)  # the image pushed at last
        status = await env.until_phase("Ready", timeout=180)
        assert status["champion"]["version"] == 1
        assert env.condition("iris-tiny", "Stalled").get("status") == "False"
        assert env.decisions() == ["registered", "gate-passed", "promoted"]
        assert runtime.metrics.jobs_started._value.get() == 1, "no second Job"
    assert kubelet.started == [f"{name}-0"]


def pipeline_condition(env: OperatorEnv, kind: str, name: str = "sweep") -> dict[str, Any]:
    status = (env.kube.read("QuantumPipeline", NAMESPACE, name) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or () if c["type"] == kind), {})


def waits_for_image(env: OperatorEnv, what: str) -> dict[str, Any] | None:
    """The pipeline's Stalled condition when it says ``what`` waits for its image."""
    stalled = pipeline_condition(env, "Stalled")
    return stalled if stalled.get("status") == "True" and what in str(stalled.get("message")) else None


async def test_a_cell_or_an_evaluation_whose_image_cannot_be_pulled_says_so_on_its_pipeline(
    env: OperatorEnv, kubelet: Kubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pipeline's cell Job, then its evaluation Job, whose pod cannot pull the image: the run stays
    Running and the pipeline says which waits and why (Stalled, reason WaitingForImage, and a Warning
    Event), never in the pod's own words; it clears once the pod runs, and the run goes on. The
    pipeline deleted while its evaluation's Job waits stops that Job before it goes."""
    monkeypatch.setattr(jobs, "PENDING_GRACE_SECONDS", 2.0)
    one = cell_sweep()
    one["spec"]["steps"] = one["spec"]["steps"][:2]  # one cell, scored on Aer
    one["spec"]["steps"][0]["train"] = {"matrix": {"training.optimizer.maxIterations": [5]}}
    async with env.operator(**JOBS):
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
        kubelet.missing_images.add(IMAGE)
        await env.client.create(one)
        stalled = await env.until(lambda: waits_for_image(env, "step sweep: cell training.optimizer.maxIterations=5"))
        assert stalled["reason"] == "WaitingForImage" and pipeline_phase(env) == "Running"
        assert "cannot be pulled (ErrImagePull)" in stalled["message"] and "--job-image" in stalled["message"]
        await env.until(lambda: "WaitingForImage" in env.reasons("sweep"), 30)

        async def missing_again(namespace: str, job: str) -> None:  # the registry goes once the cell trained
            kubelet.missing_images.add(IMAGE)

        kubelet.on_exit = missing_again
        kubelet.missing_images.discard(IMAGE)  # the image pushed: the cell's pod runs
        await env.until(lambda: pipeline_condition(env, "Stalled").get("status") == "False", 60)
        assert pipeline_phase(env) == "Running"
        stalled = await env.until(lambda: waits_for_image(env, "step noise: version 2 on local:aer"), 120)
        assert stalled["message"].startswith("step noise: version 2 on local:aer: JobWaitsForImage: evaluation Job")
        await env.until(lambda: env.reasons("sweep").count("WaitingForImage") == 2, 30)
        (evaluation,) = evaluation_objects(env)
        assert evaluation["metadata"]["name"] in stalled["message"]
        shown = json.dumps([env.kube.read("QuantumPipeline", NAMESPACE, "sweep"), env.events("sweep")])
        assert "401 Unauthorized" not in shown and "bad token" not in shown, "the pod's own words are never shown"
        assert [e["type"] for e in env.events("sweep") if e["reason"] == "WaitingForImage"] == ["Warning"] * 2
        # deleted meanwhile, the pipeline stops its evaluation's Job (and its ConfigMap goes) before it goes
        await env.client.delete("QuantumPipeline", NAMESPACE, "sweep")
        await env.until(lambda: env.kube.read("QuantumPipeline", NAMESPACE, "sweep") is None, 60)
        assert not evaluation_objects(env) and not evaluation_objects(env, "ConfigMap")


async def test_an_operator_with_another_image_replaces_a_job_stuck_on_a_missing_one(
    env: OperatorEnv, kubelet: Kubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator started with another --job-image (the admin fixed a typo) replaces the Job whose
    pod cannot pull the old one: the training runs in the new image, and is registered once."""
    monkeypatch.setattr(jobs, "PENDING_GRACE_SECONDS", 2.0)
    kubelet.missing_images.add(IMAGE)
    async with env.operator("pod-a", **JOBS):
        await env.client.create(tiny_model())
        job = await env.until(lambda: job_of(env))
        await env.until(lambda: stalled_on_image(env), 60)
    fixed = "ghcr.io/qmlops/qmlops:fixed"
    async with env.operator("pod-b", executor="jobs", job_image=fixed) as runtime:
        status = await env.until_phase("Ready", timeout=180)
        assert status["champion"]["version"] == 1
        assert runtime.metrics.jobs_started._value.get() == 1, "the stuck Job replaced by one of the new image"
    name = job["metadata"]["name"]
    assert kubelet.started == [f"{name}-0"] and kubelet.images[f"{name}-0"] == fixed
    assert env.decisions() == ["registered", "gate-passed", "promoted"]


async def test_a_job_evicted_past_its_backoff_limit_is_replaced_and_resumes(env: OperatorEnv, kubelet: Kubelet) -> None:
    async with env.operator(**JOBS, job_backoff_limit=0) as runtime:
        await env.client.create(tiny_model(iterations=60))
        job = await env.until(lambda: job_of(env))
        name, first = job["metadata"]["name"], job["metadata"]["uid"]
        await env.until(lambda: checkpoint_kept(env, name), 120)
        kubelet.evict(name, NAMESPACE)
        replaced = await env.until(lambda: (j := job_of(env)) is not None and j["metadata"]["uid"] != first and j, 60)
        assert replaced["metadata"]["name"] == name
        status = await env.until_phase("Ready", timeout=180)
        assert status["champion"]["version"] == 1
        assert env.decisions() == ["registered", "gate-passed", "promoted"]
        assert len(kubelet.started) == 2 and "resuming from the checkpoint" in kubelet.log(kubelet.started[1])
        assert version_manifest(env, 1)["artifact"]["usage"]["resumes"] >= 1
        assert runtime.metrics.jobs_started._value.get() == 2
        assert runtime.metrics.jobs_retried.labels(reason="Evicted")._value.get() == 1
        await env.until(lambda: "TrainingJobRetried" in env.reasons(), 30)
        assert "TrainingJobFailed" not in env.reasons()


def push_dataset(env: OperatorEnv, relative: str, text: str) -> None:
    """A CSV committed to the GitOps remote, as a team adds its data beside its specs."""
    work = env.tmp / "team-clone"
    if not work.exists():
        git("clone", "--quiet", str(env.remote), str(work))
    target = work / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    git("add", ".", cwd=work)
    git("-c", "user.name=Alice", "-c", "user.email=alice@example.com", "commit", "--quiet", "-m", "data", cwd=work)
    git("push", "--quiet", "origin", "main", cwd=work)


def two_blobs(rows: int = 40) -> str:
    """Two features, two well separated classes."""
    lines = ["x1,x2,label"]
    for i in range(rows):
        label = i % 2
        lines.append(f"{0.1 + 0.8 * label + 0.01 * (i % 7):.3f},{0.9 - 0.8 * label + 0.01 * (i % 5):.3f},{label}")
    return "\n".join(lines) + "\n"


FILE_DATASET = {"source": "file:data/blobs.csv", "target": "label", "testFraction": 0.3, "seed": 42}


async def test_a_file_dataset_travels_to_the_job_in_its_configmap(env: OperatorEnv, kubelet: Kubelet) -> None:
    push_dataset(env, "data/blobs.csv", two_blobs())
    async with env.operator(**JOBS) as runtime:
        await env.client.create(tiny_model(dataset=FILE_DATASET))
        job = await env.until(lambda: job_of(env))
        name = job["metadata"]["name"]
        configmap = env.kube.read("ConfigMap", NAMESPACE, name) or {}
        assert configmap["data"][jobs.DATASET_PATH_KEY] == "data/blobs.csv"
        assert configmap["data"][jobs.DATASET_DIGEST_KEY].startswith("sha256:")
        status = await env.until_phase("Ready", timeout=180)
        assert status["champion"]["version"] == 1
        assert (
            version_manifest(env, 1)["artifact"]["lineage"]["datasetDigest"]
            == configmap["data"][jobs.DATASET_DIGEST_KEY]
        )
        assert runtime.metrics.iterations._value.get() == 0, "the operator itself trained nothing"


async def test_a_file_dataset_over_the_bound_is_refused_naming_it(env: OperatorEnv, kubelet: Kubelet) -> None:
    big = two_blobs(rows=20000)
    assert len(big.encode()) > jobs.MAX_JOB_DATASET_BYTES
    push_dataset(env, "data/blobs.csv", big)
    async with env.operator(**JOBS):
        await env.client.create(tiny_model(dataset=FILE_DATASET))
        await env.until(lambda: env.status().get("phase") == "Failed", 120)
        message = stalled_message(env)
        assert "dataset.source: file:data/blobs.csv is" in message and "at most 256 KiB" in message
        assert job_of(env) is None and kubelet.started == []


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


async def test_a_four_cell_sweep_trains_and_evaluates_each_cell_in_a_job_two_at_a_time(
    env: OperatorEnv, kubelet: Kubelet
) -> None:
    ended: dict[str, dict[str, Any]] = {}
    scored_spec: dict[int, dict[str, Any]] = {}  # the cell's spec each version was scored with, by version

    async def keep(namespace: str, name: str) -> None:  # each evaluation's Job and ConfigMap as its pod ended
        job = env.kube.read("Job", namespace, name)
        if job is not None and job["metadata"]["labels"].get(jobs.COMPONENT_LABEL) == jobs.EVALUATION:
            ended[name] = job
            data = (env.kube.read("ConfigMap", namespace, name) or {})["data"]
            scored_spec[json.loads(data[jobs.WANTED_KEY])["version"]] = json.loads(data[jobs.SPEC_KEY])

    kubelet.on_exit = keep
    async with env.operator(**JOBS) as runtime:
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
        assert kubelet.peak == 1 and len(kubelet.started) == 1
        kubelet.peak = 0
        await env.client.create(cell_sweep())
        await env.until(lambda: pipeline_phase(env) == "Succeeded", 300)
        cells = [p for p in kubelet.started[1:] if "-eval-" not in p]
        assert len(cells) == 4 and len({p.rsplit("-", 1)[0] for p in cells}) == 4, cells
        assert kubelet.peak == 2, "parallelism: 2"
        assert runtime.metrics.jobs_started._value.get() == 5
        assert runtime.metrics.evaluation_jobs_started._value.get() == 4
        assert runtime.metrics.iterations._value.get() == 0, "the operator itself trained nothing"
        registered = [e for e in model_ledger(env) if e["kind"] == "registered"]
        assert len(registered) == 5 and len({e["data"]["artifactDigest"] for e in registered}) == 5
        assert [e for e in model_ledger(env) if e["kind"] == "run-finished"]
        # each cell's and each evaluation's Job and ConfigMap went once its entry was pushed
        await env.until(lambda: not training_objects(env), 30)
        await env.until(lambda: not evaluation_objects(env) and not evaluation_objects(env, "ConfigMap"), 30)
    scored = [p for p in kubelet.started if "-eval-" in p]
    assert len(scored) == 4 and sorted(f"{name}-0" for name in ended) == sorted(scored), "each version, in a Job"
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
    assert len(entries) == 4
    for entry in entries:
        spec = QuantumModelSpec.model_validate(scored_spec[entry["version"]])
        assert spec.training.seed in (8, 9), "scored as its cell was trained"
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


def training_objects(env: OperatorEnv) -> list[str]:
    """The training Jobs and ConfigMaps left in the namespace."""
    return [
        f"{kind}/{o['metadata']['name']}"
        for kind in ("Job", "ConfigMap")
        for o in env.kube.list(kind, NAMESPACE)
        if (o["metadata"].get("labels") or {}).get(jobs.COMPONENT_LABEL) == jobs.COMPONENT
    ]


def iterations_of(env: OperatorEnv, job: str) -> int:
    """The optimizer's iterations of the training ``job`` runs (its ConfigMap's spec)."""
    spec = json.loads((env.kube.read("ConfigMap", NAMESPACE, job) or {})["data"][jobs.SPEC_KEY])
    return int(spec["training"]["optimizer"]["maxIterations"])


async def test_a_cell_still_training_when_its_step_fails_finishes_and_is_registered_first(
    env: OperatorEnv, kubelet: Kubelet
) -> None:
    """failFast, as in-process (and Argo): once a cell's Job failed no other cell starts, the cell still
    training in its Job finishes and is registered, then the step fails naming the failed Job; no Job or
    ConfigMap is left behind."""
    async with env.operator(**JOBS, job_backoff_limit=0):
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
        sweep = cell_sweep()
        sweep["spec"]["steps"][0]["train"] = {
            "matrix": {"training.optimizer.maxIterations": [200, 12, 13]},  # the third never starts
            "parallelism": 2,
        }
        await env.client.create(sweep)

        def running() -> list[str]:
            return [
                p.rsplit("-", 1)[0] for p in kubelet.started[1:] if (NAMESPACE, p.rsplit("-", 1)[0]) in kubelet.pods
            ]

        both = await env.until(lambda: len(running()) == 2 and running(), 120)
        long = next(name for name in both if iterations_of(env, name) == 200)
        kubelet.crash(long, NAMESPACE, exit_code=2)
        await env.until(lambda: pipeline_phase(env) == "Failed", 180)
        kinds = [e["kind"] for e in ledger(env)]
        assert kinds[-3:] == ["registered", "step-failed", "run-finished"], kinds
        (failed,) = [e for e in ledger(env) if e["kind"] == "step-failed"]
        assert "exit code 2" in failed["message"] and f"kubectl logs job/{long}" in failed["message"]
        (other,) = [name for name in both if name != long]
        registered = [e for e in ledger(env) if e["kind"] == "registered" and e["data"].get("pipeline")]
        assert [e["data"]["trainingKey"][:12] for e in registered] == [other.rsplit("-", 1)[1]]
        assert len([p for p in kubelet.started if "-eval-" not in p]) == 3, "the model's, and two cells"
        await env.until(lambda: not training_objects(env), 30)


# --- evaluations --------------------------------------------------------------------------------------


async def test_an_evaluation_still_running_when_another_fails_is_recorded_before_the_step_fails(
    env: OperatorEnv, kubelet: Kubelet
) -> None:
    """As in-process, where every evaluation runs before the step fails: an evaluation Job that fails
    fails its step only once the others running beside it have finished and are recorded; no
    evaluation Job or ConfigMap is left behind."""
    two = sweep(steps=[*sweep()["spec"]["steps"][:2]])
    two["spec"]["steps"][0]["train"]["parallelism"] = 2  # and the evaluations two at a time

    def scoring() -> list[str]:
        jobs_of = [p.rsplit("-", 1)[0] for p in kubelet.started if "-eval-" in p]
        return [name for name in jobs_of if (NAMESPACE, name) in kubelet.pods]

    async with env.operator(**JOBS, job_backoff_limit=0):
        await env.client.create(tiny_model())
        await env.until_phase("Ready")
        await env.client.create(two)
        both = await env.until(lambda: len(scoring()) == 2 and scoring(), 240)
        kubelet.crash(both[0], NAMESPACE, exit_code=2)
        await env.until(lambda: pipeline_phase(env) == "Failed", 180)
        await env.until(lambda: not evaluation_objects(env) and not evaluation_objects(env, "ConfigMap"), 30)
    kinds = [e["kind"] for e in model_ledger(env)]
    assert kinds[-3:] == ["evaluated", "step-failed", "run-finished"], kinds
    failed = next(e for e in model_ledger(env) if e["kind"] == "step-failed")
    assert "exit code 2" in failed["message"], failed["message"]
