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
import tempfile
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from controller.api import GROUP
from controller.api.common import duration_seconds
from controller.engine.containment import OutsideWorkTree, inside_work_tree
from controller.engine.errors import RetryableError, WaitingError, WaitReason
from controller.engine.quantities import ceiling_problems
from controller.engine.reconcile.executor import EvaluationRequest, Running, TrainingRequest, evaluation_key
from controller.engine.reconcile.state import Due
from controller.engine.text import scrub
from controller.engine.training.errors import TrainingError
from controller.operator.checkpoints import MODEL_LABEL, ModelRef
from controller.operator.kube import Conflict, KubeClient, NotFound, resource_path

T = TypeVar("T")


class Host(Protocol):
    """What the executor needs of the operator's runtime: its API client, its metrics, a way to run a
    coroutine on its event loop from a reconcile thread, and a read of an object (None: there is none)."""

    client: KubeClient
    metrics: Any
    ended_cells: EndedCells

    def on_loop(self, coro: Coroutine[Any, Any, T], timeout: float = ...) -> T: ...

    async def read(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None: ...


log = logging.getLogger(__name__)


class EndedCells:
    """The pipeline cells' Jobs (and failed evaluations' Jobs) that a reconcile found ended, for their
    pipeline's worker to delete once that reconcile is pushed: a Complete one (its artifact handed to
    the engine, registered) at once, a Failed one once its failure is recorded (kept meanwhile for
    ``kubectl logs``). Used on the event loop only."""

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
# on the ConfigMap, what its training is (with its key label): what a stopped entry names
SPEC_DIGEST = f"{GROUP}/spec-digest"
DATASET_DIGEST = f"{GROUP}/dataset-digest"
REASON = f"{GROUP}/training-reason"
FAILURE = f"{GROUP}/training-failure"  # the trainer's own message, when it failed for good
SESSION_CLOSED = f"{GROUP}/session-closed"  # on a stopped training's ConfigMap: its Runtime session closed
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


class JobWaitsForImage(WaitingError):
    """The training's (or evaluation's) Job has a pod that cannot pull its image (ErrImagePull,
    ImagePullBackOff): it is stalled, saying why (the pod's reason, one of ``PULL_FAILURES``, in the
    operator's words: never the pod's own message), but not failed. The kubelet keeps pulling; once the
    pod runs (the image pushed, its registry back) it goes on in the same Job, nothing else changed. An
    operator started with another ``--job-image`` replaces such a training Job with one of its image."""

    reason = WaitReason.IMAGE


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
            "annotations": {
                SPEC_DIGEST: request.due.spec_digest,
                DATASET_DIGEST: request.due.dataset_digest,
                REASON: scrub(request.due.reason)[:1024],
            },
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
    return int(duration_seconds(spec_timeout)) + DEADLINE_SLACK_SECONDS


async def labelled(
    client: KubeClient, api_version: str, plural: str, namespace: str, selector: str
) -> list[dict[str, Any]]:
    """The objects of ``plural`` in ``namespace`` that the label ``selector`` selects (one list)."""
    path = resource_path(api_version, plural, namespace) + f"?labelSelector={selector}"
    return list((await client.get(path)).get("items") or ())


async def job_pods(client: KubeClient, namespace: str, job: str) -> list[dict[str, Any]]:
    return await labelled(client, "v1", "pods", namespace, f"job-name%3D{job}")


async def last_termination(client: KubeClient, namespace: str, job: str) -> tuple[str, int | None]:
    """Why the Job's newest ended pod ended (one list, on a failure only: pods are never polled)."""
    ended = [p for p in await job_pods(client, namespace, job) if (p.get("status") or {}).get("phase") == "Failed"]
    if not ended:
        return "Unknown", None
    newest = max(ended, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "")
    return termination(newest)


def job_image(job: Mapping[str, Any]) -> str:
    pod: Mapping[str, Any] = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    containers: list[Mapping[str, Any]] = list(pod.get("containers") or ()) or [{}]
    return str(containers[0].get("image") or "")


def not_ready(job: Mapping[str, Any]) -> bool:
    return int((job.get("status") or {}).get("ready") or 0) == 0


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

    def evaluate(self, request: EvaluationRequest) -> dict[str, Any] | Running | None:
        return self.runtime.on_loop(EvaluationJobs(self).carry_out(request))

    async def carry_out(self, request: TrainingRequest) -> bytes | Running | None:
        name = job_name(request.name, request.due.key)
        job = await self.runtime.read("batch/v1", "jobs", request.namespace, name)
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
                job = await self.runtime.read("batch/v1", "jobs", request.namespace, name)
            if job is None:
                return Running(name, f"training because {request.due.reason}, in Job {name}")
        found = (job.get("metadata") or {}).get("labels") or {}
        if (found.get(MODEL_LABEL), found.get(KEY_LABEL)) != (request.name, request.due.key):
            raise JobFailed(f"Job {name} exists for another training: delete it to train again")
        state = finished(job)
        if state is None:
            other_image = job_image(job) != self.settings.image
            if not_ready(job) and (other_image or pending_too_long(job, datetime.now(UTC))):
                pulling = [w for w in map(waiting, await job_pods(self.client, request.namespace, name)) if w]
                if pulling and other_image:  # an operator with another image: a Job of its own
                    return await self.replace(request, job, f"its image {job_image(job)} cannot be pulled")
                if pulling:  # the kubelet keeps pulling: stalled until it can, in this same Job
                    raise JobWaitsForImage(
                        f"training Job {name} waits: {describe(pulling[0], None)}; it goes on by itself once "
                        "the image can be pulled"
                    )
            return Running(name, f"training because {request.due.reason}, in Job {name}")
        ref = ModelRef(request.namespace, request.name, await self._model_uid(request))
        if state == "Complete":
            configmap = await self.client.get(resource_path("v1", "configmaps", request.namespace, name))
            raw = artifact_of(configmap, request, ref.uid)
            self._ended(request, name, "Complete")
            return raw
        try:
            return await self.failed(request, ref, job)
        except JobFailed as err:
            found = await spent_by(self.client, request.namespace, name)
            if found is not None:  # what its jobs spent, kept in its failed entry as a trainer's failure keeps it
                err.usage = found[1]
            self._ended(request, name, "Failed")
            raise

    async def failed(self, request: TrainingRequest, ref: ModelRef, job: Mapping[str, Any]) -> Running:
        """A failed Job: replaced when the node failed it (evicted), at most ``MAX_REPLACEMENTS`` times,
        its replacement resuming from the checkpoint; else the training's failure, saying why."""
        namespace, name = request.namespace, job_name(request.name, request.due.key)
        configmap = await self.runtime.read("v1", "configmaps", namespace, name)
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
        self.runtime.metrics.jobs_retried.labels(reason=reason).inc()
        return await self.replace(request, job, describe(reason, code), ref)

    async def replace(
        self, request: TrainingRequest, job: Mapping[str, Any], why: str, ref: ModelRef | None = None
    ) -> Running:
        """The training's Job deleted and created again (same name, this operator's settings), its
        ConfigMap and checkpoint kept: the new one resumes from it."""
        namespace, name = request.namespace, job_name(request.name, request.due.key)
        ref = ref or ModelRef(namespace, request.name, await self._model_uid(request))
        await self.client.call(
            "DELETE", resource_path("batch/v1", "jobs", namespace, name), {"propagationPolicy": "Background"}
        )
        log.info("%s/%s: Job %s replaced (%s), resuming from its checkpoint", namespace, request.name, name, why)
        try:
            await self.client.create(
                resource_path("batch/v1", "jobs", namespace), job_body(request, ref, self.settings)
            )
        except Conflict:  # the old one is still going: the next reconcile starts it
            raise JobRetried(f"training Job {name}: {why}; it is replaced next") from None
        self.runtime.metrics.jobs_started.inc()
        return Running(name, f"training because {request.due.reason}, in Job {name} (replaced: {why})")

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


def _count(value: Any) -> int:
    try:
        return max(0, int(str(value)))
    except ValueError:
        return 0


async def delete_training(client: KubeClient, namespace: str, name: str) -> None:
    """Delete a finished training's ConfigMap, then its Job (its pods with it): never a ConfigMap left
    without its Job, which would read as a training stopped and not recorded yet (``without_job``)."""
    with contextlib.suppress(NotFound):
        await client.delete(resource_path("v1", "configmaps", namespace, name))
    await stop_job(client, namespace, name)


async def stop_job(client: KubeClient, namespace: str, name: str) -> None:
    """Delete a training's Job (its pod stops), keeping its ConfigMap: what it spent is read from there."""
    with contextlib.suppress(NotFound):
        await client.call(
            "DELETE", resource_path("batch/v1", "jobs", namespace, name), {"propagationPolicy": "Background"}
        )


async def spent_by(client: KubeClient, namespace: str, name: str) -> tuple[Due, dict[str, float]] | None:
    """What a stopped training's ConfigMap says (``spent_in``); None without a ConfigMap."""
    try:
        configmap = await client.get(resource_path("v1", "configmaps", namespace, name))
    except NotFound:
        return None
    return spent_in(configmap)


def spent_in(configmap: Mapping[str, Any]) -> tuple[Due, dict[str, float]] | None:
    """What a stopped training's ConfigMap says: its training (key, spec and dataset digests, why it
    ran) and what its jobs spent, cumulative over its pods, as its checkpoint journal counts it; None
    without a journal (nothing ran)."""
    from controller.engine.training.checkpoint import FILE, summary
    from controller.operator.checkpoints import decode

    meta = configmap.get("metadata") or {}
    key = str((meta.get("labels") or {}).get(KEY_LABEL) or "")
    try:
        files = decode(dict(configmap)) or {}
    except (ValueError, KeyError, TypeError, AttributeError):  # an index that is not one: nothing to read
        files = {}
    journals = sorted(path for path in files if path == FILE or path.endswith(f"/{FILE}"))
    if not key or not journals:
        return None
    with tempfile.TemporaryDirectory(prefix="qmlops-journal-") as folder:
        (Path(folder) / FILE).write_bytes(files[journals[0]])
        found = summary(Path(folder))
    if found is None:
        return None
    annotations = meta.get("annotations") or {}
    due = Due(
        str(annotations.get(REASON) or f"training {key}"),
        key,
        str(annotations.get(SPEC_DIGEST) or ""),
        str(annotations.get(DATASET_DIGEST) or ""),
    )
    usage = {k: float(found["usage"].get(k, 0.0)) for k in ("qpuSeconds", "primitiveJobs", "shots")}
    return due, usage


async def model_trainings(
    client: KubeClient, namespace: str, model: str, owner: str | None = None
) -> list[dict[str, Any]]:
    """The model's training Jobs, or those of ``owner`` only (one list, when its training ended or it
    was deleted)."""
    selector = f"{MODEL_LABEL}%3D{model},{COMPONENT_LABEL}%3D{COMPONENT}"
    if owner is not None:
        selector += f",{OWNER_LABEL}%3D{owner}"
    return await labelled(client, "batch/v1", "jobs", namespace, selector)


async def training_configmaps(
    client: KubeClient, namespace: str, model: str, owner: str | None = None
) -> list[dict[str, Any]]:
    """The ConfigMaps of the model's trainings, or of ``owner``'s only (one list)."""
    selector = f"{MODEL_LABEL}%3D{model},{COMPONENT_LABEL}%3D{COMPONENT}"
    if owner is not None:
        selector += f",{OWNER_LABEL}%3D{owner}"
    return await labelled(client, "v1", "configmaps", namespace, selector)


def without_job(configmaps: Iterable[Mapping[str, Any]], current: str | None = None) -> list[Mapping[str, Any]]:
    """Of a model's own training ConfigMaps, once its Jobs but the ``current`` training's are stopped or
    gone, those that are not the current training's: trainings stopped whose spending may not be
    recorded yet, whoever stopped them (an operator restarted between stopping a Job and recording what
    it spent finds them here), unless ``ended``."""
    return [
        configmap
        for configmap in configmaps
        if (name := str((configmap.get("metadata") or {}).get("name") or "")) and name != current
    ]


def ended(configmap: Mapping[str, Any]) -> bool:
    """A training ConfigMap that holds its artifact or its trainer's failure: the training ended (its
    version registered, its failure recorded with what it spent), it was not stopped."""
    annotations = (configmap.get("metadata") or {}).get("annotations") or {}
    return ARTIFACT_KEY in (configmap.get("binaryData") or {}) or FAILURE in annotations


async def kept_checkpoint(client: KubeClient, namespace: str, name: str, folder: Path) -> int:
    """A Job's checkpoint, from its ConfigMap into ``folder`` (to close its Runtime session)."""
    try:
        configmap = await client.get(resource_path("v1", "configmaps", namespace, name))
    except NotFound:
        return 0
    return unpack_checkpoint(configmap, folder)


def unpack_checkpoint(configmap: Mapping[str, Any], folder: Path) -> int:
    """The checkpoint a training's ConfigMap holds, written into ``folder``; how many files (none when
    they do not match their index)."""
    from controller.operator.checkpoints import decode

    files = decode(dict(configmap)) or {}
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
        self.stuck: set[str] = set()  # Jobs whose owner was woken after the grace: woken again when ready

    def forget(self, uid: str) -> None:
        self.seen.pop(uid, None)
        self.stuck.discard(uid)
        task = self.pending.pop(uid, None)
        if task is not None:
            task.cancel()

    def wake_if_pending(
        self, job: Mapping[str, Any], wake: Callable[[], None], recovered: Callable[[], None] | None = None
    ) -> None:
        """Call ``wake`` once the grace has passed, if ``job`` still has no ready pod by then; and
        ``recovered`` when such a Job's pod is ready at last (its image pulled, say)."""
        uid = str((job.get("metadata") or {}).get("uid"))
        ready = int((job.get("status") or {}).get("ready") or 0) > 0
        if finished(job) or ready:
            self.forget_pending(uid)
            if ready and uid in self.stuck:
                self.stuck.discard(uid)
                if recovered is not None:
                    recovered()
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
            self.stuck.add(uid)
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


# --- evaluations --------------------------------------------------------------------------------------
#
# A pipeline's `evaluate` step scores each (version, backend) as a Job too, the way a training runs:
# a ConfigMap named like the Job holds what to score (the resolved spec, the version's artifact JSON,
# the backend and shots; for a `fake:` backend the repository's calibrations/), the Job runs
# `qmlops evaluate-job` (controller/cli/evaluate_job.py), which puts the result JSON there with its
# SHA-256 beside it; the operator checks it (the model owns the ConfigMap, the SHA-256, the version and
# backend it is for, nothing but an evaluation's fields) and hands it to the engine, which records it
# as the `evaluated` entry an in-process evaluation writes. A failed Job, or a result refused, is a
# failed evaluation: the step waits for the evaluations still running (recorded as they finish, as
# in-process), then fails, and the failed Job and its ConfigMap go once that is pushed (a later run
# evaluates afresh); a finished one's go once its `evaluated` entry is pushed (`clear_evaluations`).

EVALUATION = "evaluation"  # the component label of an evaluation's Job and ConfigMap
EVALUATION_KEY_LABEL = f"{GROUP}/evaluation-key"
EVALUATION_OWNER = "pipeline"  # evaluations are a pipeline's
WANTED_KEY = "evaluation.json"  # data: the version (number, digest), backend, shots, QPU seconds spent
VERSION_KEY = "version.json"  # data: the version's artifact JSON
CALIBRATION_PREFIX = "calibrations."  # data: the repository's calibrations/<device>.json, one key each
RESULT_KEY = "result.json"  # binaryData: the evaluation's JSON
RESULT_DIGEST = f"{GROUP}/result-sha256"
EVALUATION_FAILURE = f"{GROUP}/evaluation-failure"  # the evaluation's own message, when it failed for good
MAX_EVALUATION_BYTES = 900 * 1024  # what an evaluation's ConfigMap may hold (the API's limit is 1 MiB)
# what an evaluation's JSON may hold (``Evaluation.to_json()``) and the Job adds (the version it scored)
RESULT_FIELDS = frozenset({"backend", "device", "metrics", "shots", "rows", "usage", "calibration", "lineage"})


def evaluation_job_name(model: str, key: str) -> str:
    """The Job (and ConfigMap) of one evaluation: from the model's name and the evaluation key."""
    return f"{job_name(model, key)}-eval"


def evaluation_labels(model: str, key: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/managed-by": "qmlops",
        COMPONENT_LABEL: EVALUATION,
        MODEL_LABEL: model,
        EVALUATION_KEY_LABEL: key,
        OWNER_LABEL: EVALUATION_OWNER,
    }


def evaluation_job_body(request: EvaluationRequest, ref: ModelRef, settings: JobSettings) -> dict[str, Any]:
    """A training's Job (the same image, security context, ServiceAccount, resources and placement
    from the spec, the credentials Secret mounted), named and labelled as the evaluation's, running
    ``qmlops evaluate-job``."""
    as_training = TrainingRequest(
        namespace=request.namespace,
        name=request.name,
        spec=request.spec,
        due=Due(f"evaluating version {request.version} on {request.backend}", request.key, "", ""),
        checkpoint_dir=Path(),
        repo_root=request.repo_root,
        credentials=None,
        budget_used_seconds=request.budget_used_seconds,
        on_progress=None,
        should_stop=None,
        owner=EVALUATION_OWNER,
    )
    job = job_body(as_training, ref, settings)
    name = evaluation_job_name(request.name, request.key)
    job["metadata"]["name"] = name
    job["metadata"]["labels"] = evaluation_labels(request.name, request.key)
    job["spec"]["template"]["metadata"]["labels"] = evaluation_labels(request.name, request.key)
    (container,) = job["spec"]["template"]["spec"]["containers"]
    container["args"] = [
        "evaluate-job",
        "--namespace",
        request.namespace,
        "--configmap",
        name,
        "--evaluation-key",
        request.key,
    ]
    return job


def repository_calibrations(repo_root: Path) -> dict[str, str]:
    """The repository's ``calibrations/*.json`` (a ``fake:`` backend runs under its device's file):
    regular files inside the work tree, as ConfigMap keys."""
    from controller.engine.containment import OutsideWorkTree, inside_work_tree

    folder = repo_root / "calibrations"
    if folder.is_symlink() or not folder.is_dir():
        return {}
    found: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix != ".json" or path.is_symlink() or not path.is_file():
            continue
        try:
            inside_work_tree(repo_root, f"calibrations/{path.name}")
        except OutsideWorkTree:
            continue
        if path.stat().st_size > MAX_EVALUATION_BYTES:
            raise JobFailed(f"calibrations/{path.name}: over {MAX_EVALUATION_BYTES} bytes, too large for a Job")
        found[f"{CALIBRATION_PREFIX}{path.name}"] = path.read_text(errors="replace")
    return found


def evaluation_configmap_body(request: EvaluationRequest, ref: ModelRef) -> dict[str, Any]:
    from controller.engine.registry.canonical import canonical_bytes

    wanted = {
        "version": request.version,
        "versionDigest": request.version_digest,
        "backend": request.backend,
        "shots": request.shots,
        "budgetUsedSeconds": request.budget_used_seconds,
    }
    data = {
        SPEC_KEY: request.spec.model_dump_json(by_alias=True, exclude_none=True),
        VERSION_KEY: canonical_bytes(request.artifact).decode(),
        WANTED_KEY: canonical_bytes(wanted).decode(),
    }
    if request.backend.startswith("fake:"):
        data.update(repository_calibrations(request.repo_root))
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    if size > MAX_EVALUATION_BYTES:
        raise JobFailed(
            f"version {request.version} on {request.backend}: its spec, artifact and calibrations are {size} bytes, "
            f"over the {MAX_EVALUATION_BYTES} an evaluation's ConfigMap holds"
        )
    name = evaluation_job_name(request.name, request.key)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": request.namespace,
            "labels": evaluation_labels(request.name, request.key),
            "ownerReferences": [ref.owner_reference()],
        },
        "data": data,
    }


def _no_constant(word: str) -> Any:
    raise ValueError(f"{word} is not a number JSON allows")


def result_of(configmap: Mapping[str, Any], request: EvaluationRequest, owner_uid: str) -> dict[str, Any]:
    """The finished evaluation's JSON as the Job left it, checked: the model owns the ConfigMap, the
    bytes match the SHA-256 beside them, it is an evaluation of this version on this backend with these
    shots, and it holds an evaluation's fields only. Returned as the engine's in-process evaluation
    returns it (without the version the Job echoed)."""
    import json

    meta = configmap.get("metadata") or {}
    name = meta.get("name")
    owners = {ref.get("uid") for ref in meta.get("ownerReferences") or ()}
    if owner_uid not in owners or (meta.get("labels") or {}).get(EVALUATION_KEY_LABEL) != request.key:
        raise JobResultRefused(f"ConfigMap {name} is not this evaluation's")
    encoded = (configmap.get("binaryData") or {}).get(RESULT_KEY)
    if not encoded:
        raise JobResultRefused(f"ConfigMap {name} holds no evaluation result")
    raw = base64.b64decode(encoded)
    if (meta.get("annotations") or {}).get(RESULT_DIGEST) != hashlib.sha256(raw).hexdigest():
        raise JobResultRefused(f"ConfigMap {name}: the evaluation result does not match its SHA-256")
    try:
        result = json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        raise JobResultRefused(f"ConfigMap {name}: the evaluation result is not JSON") from None
    if not isinstance(result, dict):
        raise JobResultRefused(f"ConfigMap {name}: the evaluation result is not a JSON object")
    scored = (result.pop("versionDigest", None), result.get("backend"), result.get("shots"))
    if scored != (request.version_digest, request.backend, request.shots):
        raise JobResultRefused(
            f"ConfigMap {name}: the result is not of version {request.version} on {request.backend} "
            f"with {request.shots} shots"
        )
    unknown = sorted(set(result) - RESULT_FIELDS)
    if unknown or not isinstance(result.get("metrics"), dict) or not isinstance(result.get("usage"), dict):
        raise JobResultRefused(f"ConfigMap {name}: the result is not an evaluation's (fields {unknown[:5]})")
    return result


class EvaluationJobs:
    """The jobs executor's evaluations: each (version, backend) a Job, asked without waiting."""

    def __init__(self, executor: JobExecutor) -> None:
        self.executor = executor

    @property
    def client(self) -> KubeClient:
        return self.executor.client

    async def carry_out(self, request: EvaluationRequest) -> dict[str, Any] | Running | None:
        if not request.spec.dataset.source.startswith("builtin:"):
            raise JobFailed("dataset.source: the jobs executor evaluates builtin datasets only (a Job has no checkout)")
        over = ceiling_problems(
            request.spec.model_dump(by_alias=True, exclude_none=True), self.executor.settings.ceiling
        )
        if over:
            raise JobFailed("; ".join(f"{path}: {message}" for path, message in over))
        ns = request.namespace
        model = await self.client.get(resource_path(f"{GROUP}/v1alpha1", "quantummodels", ns, request.name))
        uid = str(model["metadata"]["uid"])
        ref = ModelRef(ns, request.name, uid)
        name = evaluation_job_name(request.name, request.key)
        running = Running(name, f"evaluating version {request.version} on {request.backend}, in Job {name}")
        job = await self.executor.runtime.read("batch/v1", "jobs", ns, name)
        if job is None and not request.start:
            return None
        if job is None:
            await self._configmap(evaluation_configmap_body(request, ref))
            try:
                await self.client.create(
                    resource_path("batch/v1", "jobs", ns), evaluation_job_body(request, ref, self.executor.settings)
                )
                self.executor.runtime.metrics.evaluation_jobs_started.inc()
                log.info(
                    "%s/%s: version %s on %s is evaluated in Job %s",
                    ns,
                    request.name,
                    request.version,
                    request.backend,
                    name,
                )
            except Conflict:  # created meanwhile (another thread, a peer): adopted below
                job = await self.executor.runtime.read("batch/v1", "jobs", ns, name)
            if job is None:
                return running
        found = (job.get("metadata") or {}).get("labels") or {}
        if (found.get(MODEL_LABEL), found.get(EVALUATION_KEY_LABEL)) != (request.name, request.key):
            raise JobFailed(f"Job {name} exists for another evaluation: delete it to evaluate again")
        state = finished(job)
        if state == "Complete":
            configmap = await self.client.get(resource_path("v1", "configmaps", ns, name))
            try:
                return result_of(configmap, request, uid)
            except JobResultRefused:
                self._failed(ns, name, request.name)
                raise
        if state == "Failed":
            why = await self.why_failed(ns, name)
            self._failed(ns, name, request.name)
            raise JobFailed(why)
        if not_ready(job) and pending_too_long(job, datetime.now(UTC)):  # its pod may wait for its image
            pulling = [w for w in map(waiting, await job_pods(self.client, ns, name)) if w]
            if pulling:  # the kubelet keeps pulling: the evaluation waits in this same Job
                raise JobWaitsForImage(
                    f"evaluation Job {name} waits: {describe(pulling[0], None)}; it goes on by itself once the "
                    "image can be pulled"
                )
        return running

    def _failed(self, namespace: str, name: str, model: str) -> None:
        """A failed evaluation's Job (or one whose result was refused) stays, failing the same way each
        time it is asked, while the step waits for the others still running; it goes with its ConfigMap
        once the step's failure is pushed (``EndedCells``), so that a later run evaluates afresh."""
        self.executor.runtime.ended_cells.note(namespace, name, model, "Failed")

    async def why_failed(self, namespace: str, name: str) -> str:
        """The evaluation's own message when it failed for good, else why its last pod ended."""
        configmap = await self.executor.runtime.read("v1", "configmaps", namespace, name)
        said = ((configmap or {}).get("metadata", {}).get("annotations") or {}).get(EVALUATION_FAILURE)
        if said:
            return scrub(str(said))
        reason, code = await last_termination(self.client, namespace, name)
        return f"evaluation Job {name} failed: {describe(reason, code)}"

    async def _configmap(self, body: dict[str, Any]) -> None:
        """A fresh ConfigMap: one left by an earlier Job of this evaluation (its result refused, its Job
        deleted) is replaced, so that nothing of it is read again."""
        path = resource_path("v1", "configmaps", body["metadata"]["namespace"])
        try:
            await self.client.create(path, body)
        except Conflict:
            with contextlib.suppress(NotFound):
                await self.client.delete(f"{path}/{body['metadata']['name']}")
            await self.client.create(path, body)


def pushed_evaluations(entries: Iterable[Any]) -> frozenset[str]:
    """The evaluation keys of ``evaluated`` ledger entries (``Entry``): whose Jobs may go."""
    keys = set()
    for entry in entries:
        data = entry.data
        if isinstance(data.get("shots"), int):
            run = str((data.get("pipeline") or {}).get("run", ""))
            keys.add(evaluation_key(str(data.get("versionDigest")), str(data.get("backend")), data["shots"], run))
    return frozenset(keys)


async def model_evaluations(client: KubeClient, namespace: str, model: str) -> list[dict[str, Any]]:
    """The model's evaluation Jobs (one list)."""
    selector = f"{MODEL_LABEL}%3D{model},{COMPONENT_LABEL}%3D{EVALUATION}"
    return await labelled(client, "batch/v1", "jobs", namespace, selector)


async def clear_evaluations(client: KubeClient, namespace: str, model: str, pushed: frozenset[str]) -> int:
    """The model's finished evaluation Jobs whose ``evaluated`` entry is pushed (``pushed`` keys)
    deleted, with their ConfigMaps (one list); how many."""
    cleared = 0
    for job in await model_evaluations(client, namespace, model):
        meta = job.get("metadata") or {}
        if finished(job) == "Complete" and (meta.get("labels") or {}).get(EVALUATION_KEY_LABEL) in pushed:
            await delete_training(client, namespace, str(meta.get("name")))
            cleared += 1
    return cleared
