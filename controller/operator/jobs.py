"""The jobs executor: each training runs as a ``batch/v1`` Job in the model's namespace.

The operator stays the only writer of Git and of status. For a training that is due it creates, once,
a ConfigMap named like the Job (the resolved spec in ``data["spec.json"]``, labelled with the model
and the training key) and the Job itself, from the operator's own image, running ``qmlops train-job``
(``controller/cli/train_job.py``) with the namespace, the ConfigMap and the training key as arguments.
The Job's pod restores its checkpoint from that ConfigMap, keeps it there after every iteration (a
pod evicted or killed resumes in the next one, ``backoffLimit`` honoured), and puts the artifact
there when it has finished, with its SHA-256 in an annotation. The operator then reads it, checks
that digest, the artifact's own digest and that its lineage is this training's spec and data, and
hands it to the engine, which registers it exactly as an in-process training.

Both objects are named from the model and the training key and labelled with both, and owned by the
model: an operator restarted while Jobs run finds each by name and adopts it (it never starts a
second one for the same training), and deleting the model deletes its Jobs.

Nothing here blocks a reconcile thread: the executor answers ``Running`` at once and the worker is
woken by the Job's watch event (``handlers.py``) when it has changed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import stat
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from controller.api import GROUP, limits
from controller.engine.containment import OutsideWorkTree, inside_work_tree
from controller.engine.errors import RetryableError
from controller.engine.quantities import ceiling_problems
from controller.engine.reconcile.executor import Running, TrainingRequest
from controller.engine.text import scrub
from controller.engine.training.errors import TrainingError
from controller.operator.checkpoints import MODEL_LABEL, ModelRef
from controller.operator.kube import Conflict, KubeClient, NotFound, resource_path

T = TypeVar("T")


class Host(Protocol):
    """What the executor needs of the operator's runtime: its API client, its metrics, and a way to
    run a coroutine on its event loop from a reconcile thread."""

    client: KubeClient
    metrics: Any
    ended_cells: EndedCells

    def on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = ...) -> T: ...


log = logging.getLogger(__name__)


class EndedCells:
    """The pipeline cells' Jobs that a reconcile found ended, for their pipeline's worker to delete once
    that reconcile is pushed: a Complete one (its artifact handed to the engine, registered) at once, a
    Failed one once its failure is recorded (kept meanwhile for ``kubectl logs``). Used on the event
    loop only."""

    def __init__(self) -> None:
        self.found: dict[tuple[str, str], tuple[str, str]] = {}  # (namespace, Job) -> (model, Complete|Failed)

    def note(self, namespace: str, job: str, model: str, state: str) -> None:
        self.found[(namespace, job)] = (model, state)

    def take(self, namespace: str, model: str, failed_too: bool) -> list[str]:
        """The Jobs of ``model`` to delete now: the Complete ones, and the Failed ones with ``failed_too``."""
        taken = [
            job
            for (ns, job), (of, state) in self.found.items()
            if (ns, of) == (namespace, model) and (state == "Complete" or failed_too)
        ]
        for job in taken:
            del self.found[(namespace, job)]
        return taken


KEY_LABEL = f"{GROUP}/training-key"
OWNER_LABEL = f"{GROUP}/training-owner"  # "model" (its own training) or "pipeline" (a cell)
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "training"
SPEC_KEY = "spec.json"
ARTIFACT_KEY = "artifact.json"  # binaryData key of the finished artifact
DATASET_KEY = "dataset"  # binaryData key of a file: dataset's bytes, beside its path and digest in data
DATASET_PATH_KEY = "dataset-path"
DATASET_DIGEST_KEY = "dataset-digest"
MAX_JOB_DATASET_BYTES = 256 * 1024  # a ConfigMap holds 1 MiB, the checkpoint up to 700 KiB of it
ARTIFACT_DIGEST = f"{GROUP}/artifact-sha256"
FAILURE = f"{GROUP}/training-failure"  # the trainer's own message, when it failed for good
REPLACEMENTS = f"{GROUP}/job-replacements"  # on the ConfigMap: how often the training's Job was replaced
MAX_REPLACEMENTS = 2  # a Job that failed for the node's reasons (evicted) is replaced this often at most
DEADLINE_SLACK_SECONDS = 900  # the Job's activeDeadlineSeconds: spec.training.timeout and this much more
PENDING_GRACE_SECONDS = 120.0  # a Job without a ready pod this long has its pods looked at, once
CONTAINER = "train"
EXIT_FAILED_FOR_GOOD = 3  # `qmlops train-job`: the training failed and another pod cannot help
CREDENTIALS_ROOT = "/var/run/qmlops/credentials"
DEFAULT_SERVICE_ACCOUNT = "qmlops-training"
NAME_PREFIX = "qmlops-"


class JobFailed(TrainingError):
    """The training's Job failed for a reason another pod cannot fix (out of memory, past its deadline,
    its image not pulled, its trainer failed or crashed in every pod): the message says why, in the
    trainer's words and never with the pod's output. It stalls, as the trainer's own failures do: it is
    recorded, and the training is not started again until its spec changes."""


class JobRetried(RetryableError):
    """The training's Job failed for the node's reasons (evicted) and could not be replaced at once:
    reconciling again starts its replacement, which resumes from the checkpoint."""


class JobResultRefused(Exception):
    """A finished Job's result is not this training's artifact."""


@dataclass(frozen=True)
class JobSettings:
    image: str
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    backoff_limit: int = 3
    resources: dict[str, Any] = field(default_factory=dict)  # the cluster's default training.resources
    ceiling: dict[str, str] = field(default_factory=dict)  # the most cpu and memory a spec may ask for


def job_name(model: str, key: str) -> str:
    """The Job (and ConfigMap) of one training: from the model's name and the training key, so that
    whoever looks for it finds the same one (63 characters at most: it becomes a pod label). A long
    name is cut and told apart by its digest."""
    if len(model) > 36:
        model = f"{model[:27].rstrip('-.')}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"
    return f"{NAME_PREFIX}{model}-{key[:12]}"


def labels(model: str, key: str, owner: str = "model") -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "qmlops",
        COMPONENT_LABEL: COMPONENT,
        MODEL_LABEL: model,
        KEY_LABEL: key,
        OWNER_LABEL: owner,
    }


def finished(job: Mapping[str, Any]) -> str | None:
    """ "Complete" or "Failed" once the Job has finished, else None."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            return str(condition["type"])
    return None


def pod_spec_resources(resources: Mapping[str, Any]) -> dict[str, Any]:
    """A container's resources from ``training.resources`` (cpu, memory): requested, and the memory
    also its limit (a pod over it is OOMKilled rather than starving its node)."""
    requests = {k: str(resources[k]) for k in ("cpu", "memory") if resources.get(k) is not None}
    limits = {"memory": requests["memory"]} if "memory" in requests else {}
    return {k: v for k, v in (("requests", requests), ("limits", limits)) if v}


def job_body(request: TrainingRequest, ref: ModelRef, settings: JobSettings) -> dict[str, Any]:
    name = job_name(request.name, request.due.key)
    spec = request.spec
    wanted = spec.training.resources.model_dump(by_alias=True, exclude_none=True) if spec.training.resources else {}
    resources = {**settings.resources, **wanted}
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    env: list[dict[str, str]] = []
    secret = spec.training.credentials_secret
    if secret:  # mounted, never copied into env or args
        mounts.append(
            {"name": "credentials", "mountPath": f"{CREDENTIALS_ROOT}/{request.namespace}/{secret}", "readOnly": True}
        )
        volumes.append({"name": "credentials", "secret": {"secretName": secret, "defaultMode": 0o400}})
        env.append({"name": "QMLOPS_CREDENTIALS_DIR", "value": CREDENTIALS_ROOT})
    container = {
        "name": CONTAINER,
        "image": settings.image,
        "command": ["qmlops"],
        "args": ["train-job", "--namespace", request.namespace, "--configmap", name, "--training-key", request.due.key],
        "env": env,
        "resources": pod_spec_resources(resources),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod: dict[str, Any] = {
        "serviceAccountName": settings.service_account,
        "restartPolicy": "Never",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if resources.get("nodeSelector"):
        pod["nodeSelector"] = dict(resources["nodeSelector"])
    if resources.get("tolerations"):
        pod["tolerations"] = [dict(t) for t in resources["tolerations"]]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": request.namespace,
            "labels": labels(request.name, request.due.key, request.owner),
            "ownerReferences": [ref.owner_reference()],
        },
        "spec": {
            "backoffLimit": settings.backoff_limit,
            "activeDeadlineSeconds": deadline_seconds(spec.training.timeout),
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_FAILED_FOR_GOOD]},
                    }
                ]
            },
            "template": {"metadata": {"labels": labels(request.name, request.due.key, request.owner)}, "spec": pod},
        },
    }


def configmap_body(request: TrainingRequest, ref: ModelRef, dataset: bytes | None = None) -> dict[str, Any]:
    spec = request.spec.model_dump_json(by_alias=True, exclude_none=True)
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": job_name(request.name, request.due.key),
            "namespace": request.namespace,
            "labels": labels(request.name, request.due.key, request.owner),
            "ownerReferences": [ref.owner_reference()],
        },
        "data": {SPEC_KEY: spec},
    }
    if dataset is not None:  # the pod checks it against the digest the operator computed
        body["data"][DATASET_PATH_KEY] = request.spec.dataset.source.removeprefix("file:")
        body["data"][DATASET_DIGEST_KEY] = request.due.dataset_digest
        body["binaryData"] = {DATASET_KEY: base64.b64encode(dataset).decode()}
    return body


def job_dataset(request: TrainingRequest) -> bytes | None:
    """A ``file:`` dataset's bytes from the operator's work tree, for the Job's ConfigMap (None for a
    ``builtin:`` one); refused, naming the file, when it is outside the work tree, not a regular file,
    or over ``MAX_JOB_DATASET_BYTES``."""
    source = request.spec.dataset.source
    if not source.startswith("file:"):
        return None
    relative = source.removeprefix("file:")
    try:
        path = inside_work_tree(request.repo_root, relative)
        info = path.stat()
    except OutsideWorkTree as err:
        raise JobFailed(f"dataset.source: {source} {err.reason}") from None
    except OSError:
        raise JobFailed(f"dataset.source: {source} does not exist in the repository") from None
    if not stat.S_ISREG(info.st_mode):
        raise JobFailed(f"dataset.source: {source} is not a regular file")
    if info.st_size > MAX_JOB_DATASET_BYTES:
        raise JobFailed(
            f"dataset.source: {source} is {info.st_size} bytes; a training Job takes a file dataset of at most "
            f"{MAX_JOB_DATASET_BYTES // 1024} KiB through its ConfigMap (train it with --executor in-process)"
        )
    with path.open("rb") as handle:  # read no more than the bound, whatever the file became since
        data = handle.read(MAX_JOB_DATASET_BYTES + 1)
    if len(data) > MAX_JOB_DATASET_BYTES:
        raise JobFailed(f"dataset.source: {source} grew over {MAX_JOB_DATASET_BYTES // 1024} KiB while read")
    return data


def artifact_of(configmap: Mapping[str, Any], request: TrainingRequest, owner_uid: str) -> bytes:
    """The finished training's artifact as the Job left it, checked: the model owns the ConfigMap,
    the bytes match the SHA-256 beside them, the artifact matches its own digest and was trained on
    this training's spec and data."""
    from controller.engine.training import ModelArtifact

    meta = configmap.get("metadata") or {}
    owners = {ref.get("uid") for ref in meta.get("ownerReferences") or ()}
    if owner_uid not in owners or (meta.get("labels") or {}).get(KEY_LABEL) != request.due.key:
        raise JobResultRefused(f"ConfigMap {meta.get('name')} is not this training's")
    encoded = (configmap.get("binaryData") or {}).get(ARTIFACT_KEY)
    if not encoded:
        raise JobResultRefused(f"ConfigMap {meta.get('name')} holds no artifact")
    raw = base64.b64decode(encoded)
    recorded = (meta.get("annotations") or {}).get(ARTIFACT_DIGEST)
    if recorded != hashlib.sha256(raw).hexdigest():
        raise JobResultRefused(f"ConfigMap {meta.get('name')}: the artifact does not match its SHA-256")
    artifact = ModelArtifact.from_json(raw)  # checks the artifact's own digest
    lineage = artifact.manifest.get("lineage") or {}
    if (lineage.get("specDigest"), lineage.get("datasetDigest")) != (
        request.due.spec_digest,
        request.due.dataset_digest,
    ):
        raise JobResultRefused(f"ConfigMap {meta.get('name')}: the artifact was not trained on this spec and data")
    return raw


# --- why a pod ended ----------------------------------------------------------------------------------

# a pod's termination reason, as the kubelet reports it, in the trainer's words
TERMINATIONS = {
    "OOMKilled": "its pod ran out of memory (OOMKilled): raise spec.training.resources.memory",
    "Evicted": "its pod was evicted from its node",
    "Preempted": "its pod was preempted on its node",
    "DeadlineExceeded": (
        "it ran past its deadline (DeadlineExceeded: the Job's activeDeadlineSeconds, spec.training.timeout "
        f"and {DEADLINE_SLACK_SECONDS // 60} minutes): raise spec.training.timeout"
    ),
    "Error": "its trainer exited with an error",
    "ErrImagePull": "its image cannot be pulled (ErrImagePull): check the operator's --job-image and the nodes' "
    "access to its registry",
    "ImagePullBackOff": "its image cannot be pulled (ImagePullBackOff): check the operator's --job-image and the "
    "nodes' access to its registry",
    "InvalidImageName": "its image name is invalid (InvalidImageName): check the operator's --job-image",
}
# the node's doing, not the training's: another pod (or Job) may well finish it, from its checkpoint
RETRYABLE = frozenset({"Evicted", "Preempted"})
# a pod that waits for ever: its image is not there
PULL_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def termination(pod: Mapping[str, Any]) -> tuple[str, int | None]:
    """(reason, exit code) of a pod that ended: the node's eviction, else its container's."""
    status = pod.get("status") or {}
    if status.get("reason") in ("Evicted", "Preempted", "DeadlineExceeded"):
        return str(status["reason"]), None
    for condition in status.get("conditions") or ():  # an eviction by the API, a preemption
        if condition.get("type") == "DisruptionTarget" and condition.get("status") == "True":
            return "Evicted", None
    for container in status.get("containerStatuses") or ():
        ended = (container.get("state") or {}).get("terminated")
        if ended:
            return str(ended.get("reason") or "Error"), ended.get("exitCode")
    return "Unknown", None


def waiting(pod: Mapping[str, Any]) -> str | None:
    """Why a pod that has not started waits, when it is its image (ErrImagePull, ImagePullBackOff)."""
    for container in (pod.get("status") or {}).get("containerStatuses") or ():
        reason = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        if reason in PULL_FAILURES:
            return str(reason)
    return None


def describe(reason: str, code: int | None) -> str:
    text = TERMINATIONS.get(reason, f"its pod ended ({scrub(reason)[:64]})")
    return f"{text}, exit code {code}" if code not in (None, 0) else text


def failure_message(name: str, namespace: str, reason: str, code: int | None, pods: int) -> str:
    """Why a Job failed, for status and the ledger: the reason in the trainer's words, and where the
    pods' output is (never the output itself)."""
    text = f"training Job {name} failed: {describe(reason, code)}"
    if reason == "Error" or reason == "Unknown":
        text += f" (in each of its {pods} pods)" if pods > 1 else ""
        text += f"; its output: kubectl logs job/{name} -n {namespace}"
    return text


def job_failure_reason(job: Mapping[str, Any]) -> str | None:
    """The reason of the Job's own Failed condition (DeadlineExceeded, BackoffLimitExceeded, ...)."""
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return str(condition.get("reason") or "") or None
    return None


def deadline_seconds(spec_timeout: str) -> int:
    """The Job's activeDeadlineSeconds: the trainer stops itself at spec.training.timeout (TrainingTimedOut,
    its own message); the deadline is the backstop for a pod that hangs."""
    return int(limits.duration_seconds(spec_timeout)) + DEADLINE_SLACK_SECONDS


async def job_pods(client: KubeClient, namespace: str, job: str) -> list[dict[str, Any]]:
    path = resource_path("v1", "pods", namespace) + f"?labelSelector=job-name%3D{job}"
    return list((await client.get(path)).get("items") or ())


async def last_termination(client: KubeClient, namespace: str, job: str) -> tuple[str, int | None]:
    """Why the Job's newest ended pod ended (one list, on a failure only: pods are never polled)."""
    ended = [p for p in await job_pods(client, namespace, job) if (p.get("status") or {}).get("phase") == "Failed"]
    if not ended:
        return "Unknown", None
    newest = max(ended, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    return termination(newest)


def pending_too_long(job: Mapping[str, Any], now: datetime) -> bool:
    """A Job that has not finished, with no ready pod, created more than the grace ago (its pod may
    wait for an image that is not there)."""
    status = job.get("status") or {}
    if finished(job) or int(status.get("ready") or 0) > 0:
        return False
    created = str((job.get("metadata") or {}).get("creationTimestamp") or "")
    try:
        since = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return False
    return (now - since).total_seconds() >= PENDING_GRACE_SECONDS


# --- the executor -------------------------------------------------------------------------------------


class JobExecutor:
    """The engine's executor (``controller.engine.reconcile.executor.Executor``) over Jobs; called on a
    reconcile thread, it does its API calls on the operator's event loop and never waits for a Job."""

    def __init__(self, runtime: Host, settings: JobSettings) -> None:
        self.runtime = runtime
        self.settings = settings

    @property
    def client(self) -> KubeClient:
        return self.runtime.client

    elsewhere = True

    def train(self, request: TrainingRequest) -> bytes | Running | None:
        return self.runtime.on_loop(self.carry_out(request))

    async def carry_out(self, request: TrainingRequest) -> bytes | Running | None:
        name = job_name(request.name, request.due.key)
        job = await self._get("batch/v1", "jobs", request.namespace, name)
        if job is None and not request.start:
            return None
        if job is None:  # what creating it takes is read and checked now only (a sweep asks every cell often)
            dataset = job_dataset(request)  # a Job has no checkout: a file: dataset goes in its ConfigMap
            over = ceiling_problems(request.spec.model_dump(by_alias=True, exclude_none=True), self.settings.ceiling)
            if over:  # the webhook refuses these; a spec applied while it was off is refused here
                raise JobFailed("; ".join(f"{path}: {message}" for path, message in over))
            ref = ModelRef(request.namespace, request.name, await self._model_uid(request))
            await self._configmap(request, ref, dataset)
            try:
                await self.client.create(
                    resource_path("batch/v1", "jobs", request.namespace), job_body(request, ref, self.settings)
                )
                self.runtime.metrics.jobs_started.inc()
                log.info("%s/%s: training %s runs in Job %s", request.namespace, request.name, request.due.key, name)
            except Conflict:  # created meanwhile (another thread, a peer): adopted below
                job = await self._get("batch/v1", "jobs", request.namespace, name)
            if job is None:
                return Running(name, f"training because {request.due.reason}, in Job {name}")
        found = (job.get("metadata") or {}).get("labels") or {}
        if (found.get(MODEL_LABEL), found.get(KEY_LABEL)) != (request.name, request.due.key):
            raise JobFailed(f"Job {name} exists for another training: delete it to train again")
        state = finished(job)
        if state is None:
            if pending_too_long(job, datetime.now(UTC)):
                pulling = [w for w in map(waiting, await job_pods(self.client, request.namespace, name)) if w]
                if pulling:  # it would wait for ever: nothing ran, nothing to keep for kubectl logs
                    await delete_training(self.client, request.namespace, name)
                    self.runtime.metrics.jobs_failed.labels(reason=pulling[0]).inc()
                    raise JobFailed(f"training Job {name} failed: {describe(pulling[0], None)}")
            return Running(name, f"training because {request.due.reason}, in Job {name}")
        ref = ModelRef(request.namespace, request.name, await self._model_uid(request))
        if state == "Complete":
            configmap = await self.client.get(resource_path("v1", "configmaps", request.namespace, name))
            raw = artifact_of(configmap, request, ref.uid)
            self._ended(request, name, "Complete")
            return raw
        try:
            return await self.failed(request, ref, job)
        except JobFailed:
            self._ended(request, name, "Failed")
            raise

    async def failed(self, request: TrainingRequest, ref: ModelRef, job: Mapping[str, Any]) -> Running:
        """A failed Job: replaced when the node failed it (evicted), at most ``MAX_REPLACEMENTS`` times,
        its replacement resuming from the checkpoint; else the training's failure, saying why."""
        namespace, name = request.namespace, job_name(request.name, request.due.key)
        configmap = await self._get("v1", "configmaps", namespace, name)
        annotations = ((configmap or {}).get("metadata") or {}).get("annotations") or {}
        said = annotations.get(FAILURE)
        if said:  # the trainer's own message: it failed for good
            raise JobFailed(scrub(str(said)))
        if job_failure_reason(job) == "DeadlineExceeded":
            raise JobFailed(f"training Job {name} failed: {describe('DeadlineExceeded', None)}")
        reason, code = await last_termination(self.client, namespace, name)
        pods = int((job.get("status") or {}).get("failed") or 0)
        if reason not in RETRYABLE:
            raise JobFailed(failure_message(name, namespace, reason, code, pods))
        replaced = _count(annotations.get(REPLACEMENTS))
        if configmap is None or replaced >= MAX_REPLACEMENTS:
            self.runtime.metrics.jobs_failed.labels(reason=reason).inc()
            message = failure_message(name, namespace, reason, code, pods)
            raise JobFailed(f"{message}, in {replaced + 1} Jobs of {pods} pods each" if replaced else message)
        patch = {"metadata": {"annotations": {REPLACEMENTS: str(replaced + 1)}}}
        await self.client.merge_patch(resource_path("v1", "configmaps", namespace, name), patch)
        await self.client.call(
            "DELETE", resource_path("batch/v1", "jobs", namespace, name), {"propagationPolicy": "Background"}
        )
        self.runtime.metrics.jobs_retried.labels(reason=reason).inc()
        log.info(
            "%s/%s: Job %s failed (%s): replaced, resuming from its checkpoint", namespace, request.name, name, reason
        )
        try:
            await self.client.create(
                resource_path("batch/v1", "jobs", namespace), job_body(request, ref, self.settings)
            )
        except Conflict:  # the failed one is still going: the next reconcile starts it
            raise JobRetried(f"training Job {name} was {describe(reason, code)}; it is replaced next") from None
        self.runtime.metrics.jobs_started.inc()
        return Running(
            name, f"training because {request.due.reason}, in Job {name} (replaced: {describe(reason, code)})"
        )

    def _ended(self, request: TrainingRequest, name: str, state: str) -> None:
        if request.owner == "pipeline":  # a model's own are its worker's to delete (workers.py)
            self.runtime.ended_cells.note(request.namespace, name, request.name, state)

    async def _configmap(self, request: TrainingRequest, ref: ModelRef, dataset: bytes | None) -> None:
        body = configmap_body(request, ref, dataset)
        with contextlib.suppress(Conflict):  # kept from an earlier Job of this training: its checkpoint resumes
            await self.client.create(resource_path("v1", "configmaps", request.namespace), body)

    async def _model_uid(self, request: TrainingRequest) -> str:
        model = await self.client.get(
            resource_path(f"{GROUP}/v1alpha1", "quantummodels", request.namespace, request.name)
        )
        return str(model["metadata"]["uid"])

    async def _get(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(resource_path(api_version, plural, namespace, name))
        except NotFound:
            return None


def _count(value: Any) -> int:
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


async def delete_training(client: KubeClient, namespace: str, name: str) -> None:
    """Delete a training's Job (its pods with it) and its ConfigMap."""
    for api_version, plural in (("batch/v1", "jobs"), ("v1", "configmaps")):
        path = resource_path(api_version, plural, namespace, name)
        try:
            if plural == "jobs":
                await client.call("DELETE", path, {"propagationPolicy": "Background"})
            else:
                await client.delete(path)
        except NotFound:
            continue


async def model_trainings(
    client: KubeClient, namespace: str, model: str, owner: str | None = None
) -> list[dict[str, Any]]:
    """The model's training Jobs, or those of ``owner`` only (one list, when its training ended or it
    was deleted)."""
    selector = f"{MODEL_LABEL}%3D{model},{COMPONENT_LABEL}%3D{COMPONENT}"
    if owner is not None:
        selector += f",{OWNER_LABEL}%3D{owner}"
    path = resource_path("batch/v1", "jobs", namespace) + f"?labelSelector={selector}"
    return list((await client.get(path)).get("items") or ())


async def kept_checkpoint(client: KubeClient, namespace: str, name: str, folder: Path) -> int:
    """A Job's checkpoint, from its ConfigMap into ``folder`` (to close its Runtime session)."""
    from controller.operator.checkpoints import decode

    try:
        configmap = await client.get(resource_path("v1", "configmaps", namespace, name))
    except NotFound:
        return 0
    files = decode(configmap) or {}
    for path, content in files.items():
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return len(files)


class JobWatch:
    """What the Jobs' watch events say, as Events on the model and counters: a pod replaced (retried,
    with why the last one ended), the Job failed (replaced when its node failed it), the Job finished.
    Nothing is polled: each Job's events come from kopf's watch, and pods are listed only on a retry or
    a failure. A Job without a ready pod has its owner woken once, after ``PENDING_GRACE_SECONDS``, to
    look at why its pod waits (an image that cannot be pulled waits for ever)."""

    def __init__(self, client: KubeClient, metrics: Any) -> None:
        self.client, self.metrics = client, metrics
        self.seen: dict[str, tuple[int, str | None]] = {}  # Job uid -> (pods failed, finished)
        self.pending: dict[str, asyncio.Task[None]] = {}  # Job uid -> its wake-up after the grace

    def forget(self, uid: str) -> None:
        self.seen.pop(uid, None)
        task = self.pending.pop(uid, None)
        if task is not None:
            task.cancel()

    def wake_if_pending(self, job: Mapping[str, Any], wake: Callable[[], None]) -> None:
        """Call ``wake`` once the grace has passed, if ``job`` still has no ready pod by then."""
        uid = str((job.get("metadata") or {}).get("uid"))
        ready = int((job.get("status") or {}).get("ready") or 0) > 0
        if finished(job) or ready:
            self.forget_pending(uid)
            return
        if uid in self.pending:
            return
        created = str((job.get("metadata") or {}).get("creationTimestamp") or "")
        try:
            age = (datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))).total_seconds()
        except ValueError:
            age = 0.0
        delay = max(0.0, PENDING_GRACE_SECONDS - age) + 1.0

        async def later() -> None:
            await asyncio.sleep(delay)
            self.pending.pop(uid, None)
            wake()

        self.pending[uid] = asyncio.create_task(later(), name=f"qmlops-job-pending:{uid}")

    def forget_pending(self, uid: str) -> None:
        task = self.pending.pop(uid, None)
        if task is not None:
            task.cancel()

    async def observe(self, job: Mapping[str, Any]) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the Events this change of ``job`` calls for."""
        meta = job.get("metadata") or {}
        uid, name, namespace = str(meta.get("uid")), str(meta.get("name")), str(meta.get("namespace"))
        failed, state = int((job.get("status") or {}).get("failed") or 0), finished(job)
        before = self.seen.get(uid, (failed, state))  # first sight (an operator restarted): no replay
        self.seen[uid] = (failed, state)
        events: list[tuple[str, str, str]] = []
        if state == "Failed" and before[1] != "Failed":
            reason, code = await last_termination(self.client, namespace, name)
            if job_failure_reason(job) == "DeadlineExceeded":
                reason, code = "DeadlineExceeded", None
            if reason in RETRYABLE:  # the executor replaces the Job (or, replaced too often, fails it)
                message = f"Job {name} failed: {describe(reason, code)}; a new Job resumes from the checkpoint"
                events.append(("Warning", "TrainingJobRetried", message))
            else:
                self.metrics.jobs_failed.labels(reason=reason).inc()
                events.append(("Warning", "TrainingJobFailed", f"Job {name} failed: {describe(reason, code)}"))
        elif failed > before[0] and state is None:
            reason, code = await last_termination(self.client, namespace, name)
            self.metrics.jobs_retried.labels(reason=reason).inc()
            message = f"Job {name}: {describe(reason, code)}; a new pod resumes from the checkpoint"
            events.append(("Warning", "TrainingJobRetried", message))
        elif state == "Complete" and before[1] != "Complete":
            events.append(("Normal", "TrainingJobSucceeded", f"Job {name} finished its training"))
        return events
