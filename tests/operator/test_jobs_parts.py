"""The jobs executor's parts: the Job it writes (command, Secret mounted, security context, resources
and placement), the result it accepts, the resource ceiling at admission, the flags; an evaluation's
Job and ConfigMap, and the evaluation result it accepts."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest

from controller.api.quantummodel import QuantumModel
from controller.cli import operator as operator_cli
from controller.cli.main import main
from controller.engine import training
from controller.engine.errors import stalls
from controller.engine.quantities import QuantityError, parse
from controller.engine.reconcile.executor import EvaluationRequest, TrainingRequest, evaluation_key
from controller.engine.reconcile.state import Due
from controller.operator import jobs, webhook
from controller.operator.checkpoints import ModelRef
from controller.operator.settings import RELEASE_IMAGE, OperatorConfig, WebhookConfig, kopf_settings
from tests.operator.operator_env import tiny_model
from tests.operator.test_webhook import post_review
from tests.support.kube import Client, KubeApi, free_port, kopf_running, login_to, port_open

UID = "0a0b0c0d-0000-4000-8000-000000000001"
KEY = "0123456789abcdef0123"
RESOURCES = {
    "cpu": "2",
    "memory": "3Gi",
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


def request(**spec: Any) -> TrainingRequest:
    body = tiny_model(**spec)
    model = QuantumModel.model_validate(body)
    digest = training.spec_digest(model.spec)
    return TrainingRequest(
        namespace="team-quantum",
        name="iris-tiny",
        spec=model.spec,
        due=Due("no version yet", KEY, digest, "sha256:" + "d" * 64),
        checkpoint_dir=Path("/nowhere"),
        repo_root=Path("/nowhere"),
        credentials=None,
        budget_used_seconds=0.0,
        on_progress=None,
        should_stop=None,
    )


def training_spec(**changes: Any) -> dict[str, Any]:
    return {**tiny_model()["spec"]["training"], **changes}


def test_the_job_runs_qmlops_with_the_secret_mounted_and_a_locked_down_container() -> None:
    settings = jobs.JobSettings(image="ghcr.io/qmlops/qmlops:0.1.0", resources={"cpu": "500m", "memory": "1Gi"})
    req = request(training=training_spec(credentialsSecret="ibm-quantum", resources=RESOURCES))
    job = jobs.job_body(req, ModelRef("team-quantum", "iris-tiny", UID), settings)
    name = jobs.job_name("iris-tiny", KEY)
    assert job["metadata"]["name"] == name and len(name) <= 63
    assert job["metadata"]["ownerReferences"][0]["uid"] == UID  # deleting the model deletes its Job
    assert job["metadata"]["labels"][jobs.KEY_LABEL] == KEY
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["qmlops"]
    assert container["args"] == ["train-job", "--namespace", "team-quantum", "--configmap", name, "--training-key", KEY]
    # the Secret is a volume; the environment names only where it is mounted
    assert {"name": "credentials", "secret": {"secretName": "ibm-quantum", "defaultMode": 0o400}} in pod["volumes"]
    assert container["env"] == [{"name": "QMLOPS_CREDENTIALS_DIR", "value": jobs.CREDENTIALS_ROOT}]
    assert pod["serviceAccountName"] == "qmlops-training" and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    # the spec's resources win over the cluster's default; memory is also the limit
    assert container["resources"] == {"requests": {"cpu": "2", "memory": "3Gi"}, "limits": {"memory": "3Gi"}}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert job["spec"]["backoffLimit"] == 3


def test_job_names_are_short_and_told_apart() -> None:
    long_a, long_b = "a" * 40 + "-first", "a" * 40 + "-second"
    names = {jobs.job_name(long_a, KEY), jobs.job_name(long_b, KEY), jobs.job_name("iris-tiny", KEY)}
    assert len(names) == 3 and all(len(n) <= 63 for n in names)


def test_a_spec_without_resources_gets_the_clusters_default_and_no_secret() -> None:
    settings = jobs.JobSettings(image="i", resources={"cpu": "500m"})
    pod = jobs.job_body(request(), ModelRef("team-quantum", "iris-tiny", UID), settings)["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"requests": {"cpu": "500m"}}
    assert not [v for v in pod["volumes"] if "secret" in v] and pod["containers"][0]["env"] == []


def test_where_a_training_runs_does_not_change_what_is_trained() -> None:
    plain = QuantumModel.model_validate(tiny_model()).spec
    placed = QuantumModel.model_validate(tiny_model(training=training_spec(resources=RESOURCES))).spec
    assert training.spec_digest(plain) == training.spec_digest(placed)


def result(raw: bytes, *, uid: str = UID, key: str = KEY, sha: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "x",
            "labels": {jobs.KEY_LABEL: key},
            "ownerReferences": [{"uid": uid}],
            "annotations": {jobs.ARTIFACT_DIGEST: sha or hashlib.sha256(raw).hexdigest()},
        },
        "binaryData": {jobs.ARTIFACT_KEY: base64.b64encode(raw).decode()},
    }


def test_only_this_trainings_untampered_artifact_is_accepted() -> None:
    req = request()
    body = {
        "task": "classification",
        "lineage": {"specDigest": req.due.spec_digest, "datasetDigest": req.due.dataset_digest},
    }
    raw = training.ModelArtifact.create(body).to_json()
    assert jobs.artifact_of(result(raw), req, UID) == raw
    other = training.ModelArtifact.create({**body, "lineage": {"specDigest": "sha256:" + "0" * 64}}).to_json()
    tampered = raw.replace(b"classification", b"regression")
    for configmap, why in [
        (result(raw, uid="someone-else"), "not this training's"),
        (result(raw, key="f" * 20), "not this training's"),
        (result(tampered), "digest"),  # its SHA-256 recomputed, but not the artifact's own digest
        (result(raw, sha="0" * 64), "SHA-256"),
        (result(other), "not trained on this spec"),
    ]:
        with pytest.raises((jobs.JobResultRefused, training.ArtifactError), match=why):
            jobs.artifact_of(configmap, req, UID)


def test_pod_terminations_are_said_in_the_trainers_words() -> None:
    oom = {"status": {"containerStatuses": [{"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}]}}
    assert jobs.termination(oom) == ("OOMKilled", 137)
    assert "spec.training.resources.memory" in jobs.describe(*jobs.termination(oom))
    assert jobs.termination({"status": {"reason": "Evicted"}}) == ("Evicted", None)
    disrupted = {"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}}
    assert jobs.termination(disrupted) == ("Evicted", None)  # evicted through the API, preempted
    crashed = {"status": {"containerStatuses": [{"state": {"terminated": {"reason": "Error", "exitCode": 1}}}]}}
    message = jobs.failure_message("qmlops-m-k", "team", *jobs.termination(crashed), pods=4)
    assert message == (
        "training Job qmlops-m-k failed: its trainer exited with an error, exit code 1 (in each of its 4 pods); "
        "its output: kubectl logs job/qmlops-m-k -n team"
    )
    # a reason the kubelet makes up is named, bounded, never trusted as text
    assert jobs.describe("x" * 500 + "token=abc", None).startswith("its pod ended (xxx")
    assert len(jobs.describe("x" * 500, None)) < 100


def test_work_elsewhere_that_waits_for_its_image_still_runs_and_is_said_to_wait() -> None:
    """A pipeline's cell (or evaluation) whose Job's pod cannot pull its image has not failed: it counts
    as running (the step stays open, nothing else starts in its place) and is handed over as held, with
    its reason; a failure is not."""
    from controller.engine.errors import WaitReason
    from controller.engine.reconcile.executor import Running
    from controller.engine.reconcile.pipeline import ask_elsewhere

    held: list[tuple[str, WaitReason]] = []
    failed: list[str] = []

    def ask(item: str, start: bool) -> Running | None:
        if item == "waits":
            raise jobs.JobWaitsForImage("training Job x waits: its image cannot be pulled")
        if item == "fails":
            raise jobs.JobFailed("OOMKilled")
        return Running("y", "running") if start else None

    still_open = ask_elsewhere(
        ["waits", "fails", "later"],
        ask,
        lambda item, result: None,
        lambda item, err: failed.append(item),
        parallelism=1,
        fail_fast=False,
        held=lambda item, err: held.append((item, err.reason)),
    )
    assert still_open and held == [("waits", WaitReason.IMAGE)] and failed == ["fails"]


def test_what_retrying_can_fix_is_retried_and_the_rest_stalls() -> None:
    assert {"Evicted", "Preempted"} == set(jobs.RETRYABLE)
    assert stalls(jobs.JobFailed("OOMKilled")) and not stalls(jobs.JobRetried("evicted"))
    assert not stalls(jobs.JobWaitsForImage("ErrImagePull")), "the kubelet keeps pulling: not the training's failure"
    assert isinstance(jobs.JobFailed("x"), training.TrainingError)  # recorded as the trainer's failures are


def test_a_pod_that_waits_for_its_image_is_looked_at_after_the_grace() -> None:
    pulling = {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ImagePullBackOff"}}}]}}
    starting = {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    assert jobs.waiting(pulling) == "ImagePullBackOff" and jobs.waiting(starting) is None
    assert "--job-image" in jobs.describe("ImagePullBackOff", None)
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def job(age: float, ready: int = 0, done: bool = False) -> dict[str, Any]:
        created = (now - timedelta(seconds=age)).strftime("%Y-%m-%dT%H:%M:%SZ")
        conditions = [{"type": "Complete", "status": "True"}] if done else []
        return {"metadata": {"creationTimestamp": created}, "status": {"ready": ready, "conditions": conditions}}

    grace = jobs.PENDING_GRACE_SECONDS
    assert jobs.pending_too_long(job(grace + 1), now)
    assert not jobs.pending_too_long(job(grace - 5), now)
    assert not jobs.pending_too_long(job(grace + 1, ready=1), now)
    assert not jobs.pending_too_long(job(grace + 1, done=True), now)


def test_the_jobs_deadline_is_the_trainings_timeout_and_some() -> None:
    settings = jobs.JobSettings(image="i")
    req = request(training=training_spec(timeout="30m"))
    job = jobs.job_body(req, ModelRef("team-quantum", "iris-tiny", UID), settings)
    assert job["spec"]["activeDeadlineSeconds"] == 1800 + jobs.DEADLINE_SLACK_SECONDS
    assert "spec.training.timeout" in jobs.describe("DeadlineExceeded", None)


def test_a_failed_cells_job_waits_for_its_failure_to_be_recorded() -> None:
    ended = jobs.EndedCells()
    ended.note("team", "qmlops-m-a", "m", "Complete")
    ended.note("team", "qmlops-m-b", "m", "Failed")
    ended.note("team", "qmlops-other-c", "other", "Complete")
    assert ended.take("team", "m", failed_too=False) == ["qmlops-m-a"]
    assert ended.take("team", "m", failed_too=False) == []  # kept for kubectl logs
    assert ended.take("team", "m", failed_too=True) == ["qmlops-m-b"]
    assert ended.take("elsewhere", "other", failed_too=True) == []


BLOBS = "x1,x2,label\n" + "".join(f"{0.1 + 0.8 * (i % 2):.2f},{0.9 - 0.01 * i:.2f},{i % 2}\n" for i in range(30))
FILE_DATASET = {"source": "file:data/blobs.csv", "target": "label", "testFraction": 0.3, "seed": 42}


def file_request(repo: Path) -> TrainingRequest:
    req = request(dataset=FILE_DATASET)
    try:
        digest = training.dataset_digest(req.spec, repo)
    except training.TrainingError:  # the executor refuses it before any digest matters
        digest = "sha256:x"
    return replace(req, repo_root=repo, due=replace(req.due, dataset_digest=digest))


def test_a_file_dataset_goes_in_the_configmap_and_is_checked_in_the_pod(tmp_path: Path) -> None:
    from controller.cli.train_job import lay_out_dataset

    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "blobs.csv").write_text(BLOBS)
    req = file_request(repo)
    dataset = jobs.job_dataset(req)
    assert dataset == BLOBS.encode()
    configmap = jobs.configmap_body(req, ModelRef("team-quantum", "iris-tiny", UID), dataset)
    assert configmap["data"][jobs.DATASET_DIGEST_KEY] == req.due.dataset_digest
    assert lay_out_dataset(configmap, req.spec, tmp_path / "pod") is None
    assert (tmp_path / "pod" / "data" / "blobs.csv").read_text() == BLOBS
    # changed on the way: the pod refuses to train on it
    configmap["binaryData"][jobs.DATASET_KEY] = base64.b64encode(BLOBS.replace("0.10", "0.11").encode()).decode()
    problem = lay_out_dataset(configmap, req.spec, tmp_path / "pod2")
    assert (
        problem == "dataset.source: file:data/blobs.csv in the ConfigMap does not match the training's dataset digest"
    )


def test_a_file_dataset_a_job_cannot_take_is_refused_naming_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    with pytest.raises(jobs.JobFailed, match=r"file:data/blobs\.csv does not exist"):
        jobs.job_dataset(file_request(repo))
    (tmp_path / "secret.csv").write_text(BLOBS)
    (repo / "data" / "blobs.csv").symlink_to(tmp_path / "secret.csv")
    with pytest.raises(jobs.JobFailed, match=r"file:data/blobs\.csv leads outside the repository"):
        jobs.job_dataset(file_request(repo))
    (repo / "data" / "blobs.csv").unlink()
    (repo / "data" / "blobs.csv").write_text(BLOBS * (jobs.MAX_JOB_DATASET_BYTES // len(BLOBS) + 1))
    with pytest.raises(jobs.JobFailed, match="at most 256 KiB through its ConfigMap"):
        jobs.job_dataset(file_request(repo))
    assert jobs.job_dataset(request()) is None  # builtin: nothing to carry


def test_quantities() -> None:
    assert parse("500m") == parse("0.5") and parse("1Gi") == 2**30 and parse("2G") == 2 * 10**9
    with pytest.raises(QuantityError):
        parse("lots")


def test_the_jobs_flags() -> None:
    parser = argparse.ArgumentParser()
    operator_cli.register(parser.add_subparsers())
    newcomer = operator_cli.build_config(parser.parse_args(["operator", "--repo", "x", "--executor", "jobs"]))
    assert newcomer.job_image == RELEASE_IMAGE, "the Jobs run this release's image unless told"
    with pytest.raises(operator_cli.UsageError, match="--job-max-memory"):
        operator_cli.build_config(parser.parse_args(["operator", "--repo", "x", "--job-max-memory", "much"]))
    config = operator_cli.build_config(
        parser.parse_args(
            [
                "operator",
                "--repo",
                "x",
                "--executor",
                "jobs",
                "--job-image",
                "i",
                "--job-max-memory",
                "4Gi",
                "--job-default-cpu",
                "1",
            ]
        )
    )
    assert (
        config.executor == "jobs" and config.job_ceiling == {"memory": "4Gi"} and config.job_resources == {"cpu": "1"}
    )
    assert operator_cli.build_config(parser.parse_args(["operator", "--repo", "x"])).executor == "in-process"


@pytest.fixture
async def ceiling_webhook(kube: KubeApi, client: Client, tmp_path: Path) -> AsyncIterator[str]:
    kube.register_crds()
    port = free_port()
    config = OperatorConfig(
        repo=str(tmp_path / "repo"), workdir=tmp_path, webhook=WebhookConfig(port=port, addr="127.0.0.1", insecure=True)
    )
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login_to(kube))
    webhook.register(registry, ceiling={"cpu": "4", "memory": "8Gi"})
    async with kopf_running(registry, settings=kopf_settings(config), ready=lambda: port_open("127.0.0.1", port)):
        yield f"http://127.0.0.1:{port}"


async def test_a_spec_above_the_ceiling_is_refused_at_admission_naming_the_field(ceiling_webhook: str) -> None:
    within = tiny_model(training=training_spec(resources={"cpu": "4", "memory": "512Mi"}))
    assert (await post_review(ceiling_webhook, within))["allowed"] is True
    above = tiny_model(training=training_spec(resources={"cpu": "500m", "memory": "16Gi"}))
    answer = await post_review(ceiling_webhook, above)
    assert answer["allowed"] is False
    assert answer["status"]["message"] == "spec.training.resources.memory: 16Gi is above this cluster's ceiling of 8Gi"


# --- evaluations ---------------------------------------------------------------------------------------

VERSION_DIGEST = "sha256:" + "a" * 64


def evaluation(**spec: Any) -> EvaluationRequest:
    model = QuantumModel.model_validate(tiny_model(**spec))
    return EvaluationRequest(
        namespace="team-quantum",
        name="iris-tiny",
        version=2,
        version_digest=VERSION_DIGEST,
        artifact={"task": "classification"},
        spec=model.spec,
        backend="local:aer",
        shots=128,
        key=evaluation_key(VERSION_DIGEST, "local:aer", 128),
        repo_root=Path("/nowhere"),
        credentials=None,
        budget_used_seconds=0.0,
    )


def test_an_evaluation_runs_qmlops_evaluate_job_in_a_job_like_a_trainings() -> None:
    settings = jobs.JobSettings(image="ghcr.io/qmlops/qmlops:0.1.0")
    spec = {"training": training_spec(credentialsSecret="ibm-quantum", resources=RESOURCES)}
    req, ref = evaluation(**spec), ModelRef("team-quantum", "iris-tiny", UID)
    job = jobs.evaluation_job_body(req, ref, settings)
    trained = jobs.job_body(request(**spec), ref, settings)
    name = jobs.evaluation_job_name("iris-tiny", req.key)
    assert job["metadata"]["name"] == name and len(name) <= 63 and name != jobs.job_name("iris-tiny", req.key)
    labels = job["metadata"]["labels"]
    assert labels == job["spec"]["template"]["metadata"]["labels"]
    assert (labels[jobs.COMPONENT_LABEL], labels[jobs.OWNER_LABEL]) == ("evaluation", "pipeline")
    assert labels[jobs.EVALUATION_KEY_LABEL] == req.key and jobs.KEY_LABEL not in labels
    assert job["metadata"]["ownerReferences"][0]["uid"] == UID
    (container,) = job["spec"]["template"]["spec"]["containers"]
    args = ["evaluate-job", "--namespace", "team-quantum", "--configmap", name, "--evaluation-key", req.key]
    assert container["command"] == ["qmlops"] and container["args"] == args
    # everything else is a training's: security context, ServiceAccount, resources, placement, the Secret
    (as_training,) = trained["spec"]["template"]["spec"]["containers"]
    assert {k: v for k, v in container.items() if k != "args"} == {k: v for k, v in as_training.items() if k != "args"}
    pod, trained_pod = job["spec"]["template"]["spec"], trained["spec"]["template"]["spec"]
    assert {k: v for k, v in pod.items() if k != "containers"} == {
        k: v for k, v in trained_pod.items() if k != "containers"
    }
    configmap = jobs.evaluation_configmap_body(req, ref)
    assert configmap["metadata"]["name"] == name and configmap["metadata"]["labels"] == labels
    wanted = json.loads(configmap["data"][jobs.WANTED_KEY])
    assert (wanted["versionDigest"], wanted["backend"], wanted["shots"]) == (VERSION_DIGEST, "local:aer", 128)
    assert json.loads(configmap["data"][jobs.VERSION_KEY]) == req.artifact


def test_an_evaluation_too_large_for_its_configmap_is_refused_before_any_job() -> None:
    req = evaluation()
    big = dataclasses.replace(req, artifact={"weights": "0" * jobs.MAX_EVALUATION_BYTES})
    with pytest.raises(jobs.JobFailed, match="over the"):
        jobs.evaluation_configmap_body(big, ModelRef("team-quantum", "iris-tiny", UID))


def evaluated(raw: bytes, *, uid: str = UID, key: str | None = None, sha: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "x",
            "labels": {jobs.EVALUATION_KEY_LABEL: key or evaluation().key},
            "ownerReferences": [{"uid": uid}],
            "annotations": {jobs.RESULT_DIGEST: sha or hashlib.sha256(raw).hexdigest()},
        },
        "binaryData": {jobs.RESULT_KEY: base64.b64encode(raw).decode()},
    }


def test_only_this_evaluations_untampered_result_is_accepted() -> None:
    req = evaluation()
    result = {
        "backend": "local:aer",
        "device": "aer_simulator",
        "metrics": {"accuracy": 0.9},
        "shots": 128,
        "rows": 30,
        "usage": {"primitiveJobs": 1.0},
    }
    raw = json.dumps({**result, "versionDigest": VERSION_DIGEST}).encode()
    assert jobs.result_of(evaluated(raw), req, UID) == result  # as an in-process evaluation returns it

    def of(**changes: Any) -> bytes:
        return json.dumps({**result, "versionDigest": VERSION_DIGEST, **changes}).encode()

    for configmap, why in [
        (evaluated(raw, uid="someone-else"), "not this evaluation's"),
        (evaluated(raw, key="f" * 16), "not this evaluation's"),
        (evaluated(raw, sha="0" * 64), "SHA-256"),
        (evaluated(raw.replace(b"0.9", b"1.0"), sha=hashlib.sha256(raw).hexdigest()), "SHA-256"),
        (evaluated(of(versionDigest="sha256:" + "b" * 64)), "not of version 2"),  # another version's
        (evaluated(of(backend="fake:manila")), "not of version 2 on local:aer"),
        (evaluated(of(shots=64)), "with 128 shots"),
        (evaluated(of(pipeline={"run": "r-forged"})), "not an evaluation's"),
        (evaluated(raw.replace(b"0.9", b"NaN")), "not JSON"),
        (evaluated(b"[1, 2]"), "not a JSON object"),
    ]:
        with pytest.raises(jobs.JobResultRefused, match=why):
            jobs.result_of(configmap, req, UID)


def test_pushed_evaluations_are_keyed_as_the_jobs_were() -> None:
    @dataclasses.dataclass
    class Entry:
        data: dict[str, Any]

    pushed = jobs.pushed_evaluations([Entry({"versionDigest": VERSION_DIGEST, "backend": "local:aer", "shots": 128})])
    assert pushed == {evaluation().key}


def test_an_ibm_evaluation_is_keyed_by_its_run_and_a_simulators_is_not() -> None:
    """A real device's figures are of their run's day: another run's Job is never taken for this one's."""
    assert evaluation_key(VERSION_DIGEST, "ibm:ibm_torino", 128, "run-a") != evaluation_key(
        VERSION_DIGEST, "ibm:ibm_torino", 128, "run-b"
    )
    assert evaluation_key(VERSION_DIGEST, "local:aer", 128, "run-a") == evaluation_key(
        VERSION_DIGEST, "local:aer", 128, "run-b"
    )

    @dataclasses.dataclass
    class Entry:
        data: dict[str, Any]

    recorded = {
        "versionDigest": VERSION_DIGEST,
        "backend": "ibm:ibm_torino",
        "shots": 128,
        "pipeline": {"run": "run-a"},
    }
    assert jobs.pushed_evaluations([Entry(recorded)]) == {
        evaluation_key(VERSION_DIGEST, "ibm:ibm_torino", 128, "run-a")
    }


@pytest.mark.parametrize("command", ["train-job", "evaluate-job"])
def test_a_job_command_that_cannot_reach_its_configmap_asks_for_a_new_pod_without_a_traceback(
    command: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nowhere"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    key = "--training-key" if command == "train-job" else "--evaluation-key"
    code = main([command, "--namespace", "team-quantum", "--configmap", "cm", key, "k1"])
    assert code == 1  # the Job retries in a new pod
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        f"{'training' if command == 'train-job' else 'evaluation'} not finished: ConfigException"
    ]


@pytest.mark.parametrize("command", ["train-job", "evaluate-job"])
async def test_a_job_command_whose_configmap_does_not_say_what_to_do_fails_for_good_and_says_so(
    command: str,
    kube: KubeApi,
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """A spec that is not JSON, or not a spec, is the same in every pod: the Job fails for good (exit 3,
    its pod failure policy) with the reason on the ConfigMap, rather than retrying into backoffLimit."""
    import asyncio

    from tests.operator.operator_env import NAMESPACE

    train = command == "train-job"
    label, failure = (jobs.KEY_LABEL, jobs.FAILURE) if train else (jobs.EVALUATION_KEY_LABEL, jobs.EVALUATION_FAILURE)
    monkeypatch.setenv("KUBECONFIG", str(kube.write_kubeconfig(tmp_path / "kubeconfig")))
    key = "--training-key" if train else "--evaluation-key"
    await client.namespace(NAMESPACE)
    for spec in ("{not json", json.dumps({"owner": "nobody"})):
        await client.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "cm", "namespace": NAMESPACE, "labels": {label: "k1"}},
                "data": {jobs.SPEC_KEY: spec},
            }
        )
        caplog.clear()
        code = await asyncio.to_thread(main, [command, "--namespace", NAMESPACE, "--configmap", "cm", key, "k1"])
        assert code == 3
        annotations = kube.read("ConfigMap", NAMESPACE, "cm")["metadata"]["annotations"]
        assert annotations[failure].startswith(f"ConfigMap cm does not say what to {'train' if train else 'evaluate'}")
        assert "not json" not in caplog.text and "nobody" not in caplog.text, "the ConfigMap's data is not quoted"
        await client.delete("ConfigMap", NAMESPACE, "cm")


def test_cell_jobs_that_end_together_are_looked_at_by_one_reconcile_of_their_pipeline() -> None:
    import time
    from types import SimpleNamespace

    from controller.operator.pipelines import Pipelines

    pipelines = Pipelines(SimpleNamespace())  # type: ignore[arg-type]
    pipelines.job_settle = 60.0
    worker = pipelines.worker("uid-1", "ns", "sweep")
    worker.body = kopf.Body({"metadata": {"generation": 1}, "spec": {"model": "m"}})  # type: ignore[typeddict-item]
    worker.first, worker.generation = False, 1
    assert worker.due() is None
    pipelines.job_ended("ns", "m")
    first = worker.settle_at
    assert first is not None and worker.due() is None, "the first end waits for the others"
    pipelines.job_ended("ns", "m")
    pipelines.job_ended("ns", "other-model")
    assert worker.settle_at == first, "a second end is looked at with the first, not later"
    worker.settle_at = time.monotonic() - 1  # the settle time has come
    assert worker.due() == "jobs ended"


def test_a_model_moved_by_its_pipeline_looks_again_once_for_the_registrations_close_together() -> None:
    import time
    from types import SimpleNamespace

    from controller.operator.handlers import Models
    from controller.operator.pipelines import Pipelines

    runtime = SimpleNamespace(client=None, metrics=None)
    models = Models(runtime, Pipelines(runtime))  # type: ignore[arg-type]
    models.moved_settle = 60.0
    worker = models.worker("uid-m", "m", "ns")
    models.poke("ns", "m")
    first = worker.next_at
    assert first is not None and not worker.schedule_due(), "it waits for the registrations that follow"
    models.poke("ns", "m")
    assert worker.next_at == first
    worker.next_at = time.monotonic() - 1
    assert worker.schedule_due()
    worker.next_at = time.monotonic() + 3600  # a schedule further out: the registration comes first
    models.poke("ns", "m")
    assert worker.next_at is not None and worker.next_at < time.monotonic() + 61
