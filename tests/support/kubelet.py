"""A kubelet (and Job controller) stand-in for the harness: it runs each Job's pod as a local process.

For every ``batch/v1`` Job in the harness that has not finished and has no pod running, it creates a
Pod (labelled ``job-name``, owned by the Job) and runs the container's ``command`` + ``args`` as a
process (never through a shell), with the container's environment and its volumes laid out under a
folder of the pod's own, as a container would see them: a Secret volume's keys as files (mode 0400),
an emptyDir as an empty folder; environment values naming a mounted path are pointed at it there.
The process reaches the harness as a pod reaches its apiserver, through a kubeconfig the stand-in
gives it (``KUBECONFIG``: the service account's token and ``KUBERNETES_SERVICE_HOST`` in a cluster).

When the process ends it writes the pod's and the Job's status back as the kubelet and the Job
controller would: succeeded (``Complete``), failed with the exit code (a new pod, until
``backoffLimit`` is exceeded, or at once ``Failed`` when the ``podFailurePolicy`` says ``FailJob``
for that code). :meth:`evict` and :meth:`oom_kill` kill a pod mid-run (SIGKILL) and report it as
``Evicted`` or ``OOMKilled``; :meth:`crash` ends it with an exit code of the test's choosing, as a
trainer that crashed. A Job's ``activeDeadlineSeconds`` is enforced (its pod killed, the Job
``Failed`` with ``DeadlineExceeded``). A pod whose image is in :attr:`missing_images` is created and
waits with ``ErrImagePull`` (and the runtime's message, :data:`PULL_MESSAGE`), as on a node that cannot pull it, and starts once the test takes the image
out of the set (pushed at last, its registry back). :attr:`images` says which image each pod ran;
:attr:`entry_points` gives an image a ``qmlops`` of its own (``tests/support/ibm_image.py``: IBM stood in). The Job's ``ready``
counts the pods running. A Job deleted meanwhile has its process killed. ``on_exit`` lets a test
act between a process's end and its status (tamper with what it left).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.support.kube import Client, KubeApi

JSON = dict[str, Any]
# what a waiting pod's status says, as a node's container runtime words it (the registry's own reply
# quoted): never to be shown by the operator
PULL_MESSAGE = 'failed to pull image "{image}": rpc error: unexpected status 401 Unauthorized: registry said: bad token'


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pod:
    job: str
    namespace: str
    name: str
    process: subprocess.Popen[bytes]
    root: Path
    killed_for: str | None = None  # Evicted, OOMKilled, DeadlineExceeded, Error (crash)
    exit_code: int | None = None  # reported instead of the process's own (crash)


@dataclass
class Kubelet:
    kube: KubeApi
    root: Path
    poll: float = 0.25  # a kubelet syncs pods every few seconds; 0.05 s cost the Jobs tests 16% of their CPU
    capacity: int | None = None  # pods the node runs at once (None: any number); the others wait
    # awaited with (namespace, Job) when a pod's process has ended, before its status is written back
    # (a test tampers with what the pod left there)
    on_exit: Callable[[str, str], Awaitable[None]] | None = None
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)  # (namespace, job) -> running pod
    started: list[str] = field(default_factory=list)  # pod names, in the order they were started
    images: dict[str, str] = field(default_factory=dict)  # pod name -> the image it ran
    # image -> the command standing for its ``qmlops`` (default: this checkout's own qmlops)
    entry_points: dict[str, list[str]] = field(default_factory=dict)
    peak: int = 0  # the most pods that ran at once
    # their pods wait with ErrImagePull; taken out of the set (the image pushed, its registry back), a
    # waiting pod starts at the kubelet's next pull, as a real kubelet's back-off retries it
    missing_images: set[str] = field(default_factory=set)
    # (namespace, job) -> (its waiting pod, the Job's uid)
    waiting: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    @property
    def client(self) -> Client:
        return Client(self.kube)

    async def __aenter__(self) -> Kubelet:
        self.root.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = self.kube.write_kubeconfig(self.root / "kubeconfig", user="pod")
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for pod in list(self.pods.values()):
            with contextlib.suppress(ProcessLookupError):
                pod.process.kill()
            await asyncio.to_thread(pod.process.wait)
        self.pods.clear()

    # --- faults ------------------------------------------------------------------------------------

    def evict(self, job: str, namespace: str) -> None:
        self._kill(job, namespace, "Evicted")

    def oom_kill(self, job: str, namespace: str) -> None:
        self._kill(job, namespace, "OOMKilled")

    def crash(self, job: str, namespace: str, exit_code: int = 1) -> None:
        """The trainer crashes: its process ends and the pod reports ``Error`` with ``exit_code``."""
        self._kill(job, namespace, "Error", exit_code)

    def _kill(self, job: str, namespace: str, why: str, exit_code: int | None = None) -> None:
        pod = self.pods[(namespace, job)]
        pod.killed_for, pod.exit_code = why, exit_code
        pod.process.send_signal(signal.SIGKILL)

    # --- the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            jobs = {(j["metadata"]["namespace"], j["metadata"]["name"]): j for j in self.kube.list("Job")}
            for key, pod in list(self.pods.items()):
                if key not in jobs:  # the Job was deleted: its pod goes
                    with contextlib.suppress(ProcessLookupError):
                        pod.process.kill()
                    await asyncio.to_thread(pod.process.wait)
                    del self.pods[key]
                elif pod.process.poll() is not None:
                    del self.pods[key]
                    await self._ended(jobs[key], pod)
            for key, (_, uid) in list(self.waiting.items()):
                if key not in jobs or jobs[key]["metadata"]["uid"] != uid:  # deleted, or replaced
                    del self.waiting[key]
            for namespace, name in jobs:
                job = self.kube.read("Job", namespace, name)  # as it is now, after the pods that ended
                if job is None or self._finished(job):
                    continue
                if self._past_deadline(job):
                    await self._deadline(job)
                    continue
                if (namespace, name) in self.waiting:
                    await self._pull(job)
                    continue
                if (namespace, name) in self.pods:
                    continue
                full = self.capacity is not None and len(self.pods) >= self.capacity
                if not job["metadata"].get("deletionTimestamp") and not full:
                    await self._start(job)
            await asyncio.sleep(self.poll)

    @staticmethod
    def _past_deadline(job: JSON) -> bool:
        deadline, started = job["spec"].get("activeDeadlineSeconds"), (job.get("status") or {}).get("startTime")
        if deadline is None or not started:
            return False
        since = datetime.fromisoformat(str(started).replace("Z", "+00:00"))
        return (datetime.now(UTC) - since).total_seconds() > float(deadline)

    async def _deadline(self, job: JSON) -> None:
        """The Job controller's deadline: its running pod killed, the Job Failed (DeadlineExceeded)."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        pod = self.pods.pop((namespace, name), None)
        if pod is not None:
            pod.killed_for = "DeadlineExceeded"
            with contextlib.suppress(ProcessLookupError):
                pod.process.kill()
            await asyncio.to_thread(pod.process.wait)
            status = {"phase": "Failed", "reason": "DeadlineExceeded"}
            with contextlib.suppress(Exception):
                await self.client.patch("Pod", namespace, pod.name, {"status": status}, status=True)
        failed = {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "lastTransitionTime": _now()}
        patch = {"status": {"active": 0, "ready": 0, "conditions": [failed]}}
        await self.client.patch("Job", namespace, name, patch, status=True)

    @staticmethod
    def _finished(job: JSON) -> bool:
        return any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or ()
        )

    async def _start(self, job: JSON) -> None:
        meta, spec = job["metadata"], job["spec"]
        namespace, name = meta["namespace"], meta["name"]
        template = spec["template"]
        status = job.get("status") or {}
        number = int(status.get("failed") or 0) + int(status.get("succeeded") or 0)
        pod_name = f"{name}-{number}"
        root = self.root / namespace / pod_name
        root.mkdir(parents=True, exist_ok=True)
        container = template["spec"]["containers"][0]
        env, command = self._environment(namespace, job, container, root)
        pod_body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": namespace,
                "labels": {**(template.get("metadata") or {}).get("labels", {}), "job-name": name},
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": meta["uid"], "controller": True}
                ],
            },
            "spec": template["spec"],
        }
        await self.client.create(pod_body)
        patch: JSON = {"status": {"active": 1, "ready": 0}}
        if not status.get("startTime"):
            patch["status"]["startTime"] = _now()
        if container.get("image") in self.missing_images:  # it waits until the image can be pulled
            said = {"reason": "ErrImagePull", "message": PULL_MESSAGE.format(image=container.get("image"))}
            pulling = {"name": container["name"], "state": {"waiting": said}}
            pod_status = {"phase": "Pending", "containerStatuses": [pulling]}
            await self.client.patch("Pod", namespace, pod_name, {"status": pod_status}, status=True)
            self.waiting[(namespace, name)] = (pod_name, meta["uid"])
            await self.client.patch("Job", namespace, name, patch, status=True)
            return
        await self._launch(job, pod_name, root, command, env, patch)

    async def _pull(self, job: JSON) -> None:
        """A waiting pod's image pulled again: when it is no longer missing, the pod starts."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        full = self.capacity is not None and len(self.pods) >= self.capacity
        if container.get("image") in self.missing_images or full:
            return
        pod_name, _ = self.waiting.pop((namespace, name))
        root = self.root / namespace / pod_name
        env, command = self._environment(namespace, job, container, root)
        await self._launch(job, pod_name, root, command, env, {"status": {"active": 1}})

    def _environment(self, namespace: str, job: JSON, container: JSON, root: Path) -> tuple[dict[str, str], list[str]]:
        """The container's environment (its volumes laid out under ``root``) and its command line."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(root / "home"),
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONUNBUFFERED": "1",
        }
        mounted = self._mount(namespace, job["spec"]["template"]["spec"], container, root)
        for item in container.get("env") or ():
            env[item["name"]] = self._inside(str(item.get("value", "")), mounted)
        if "/tmp" in mounted:
            env["TMPDIR"] = mounted["/tmp"]
        command = [*container.get("command", ()), *container.get("args", ())]
        if command and command[0] == "qmlops":  # the image's entry point
            entry = self.entry_points.get(container.get("image", ""))
            command[:1] = entry or [str(Path(sys.executable).parent / "qmlops")]
        return env, command

    async def _launch(
        self, job: JSON, pod_name: str, root: Path, command: list[str], env: dict[str, str], patch: JSON
    ) -> None:
        """The pod's process started: the pod Running, the Job's pod ready."""
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
        container = job["spec"]["template"]["spec"]["containers"][0]
        await self.client.patch("Pod", namespace, pod_name, {"status": {"phase": "Running"}}, status=True)
        log = (root / "log").open("wb")
        process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.pods[(namespace, name)] = Pod(name, namespace, pod_name, process, root)
        self.started.append(pod_name)
        self.images[pod_name] = container.get("image", "")
        self.peak = max(self.peak, len(self.pods))
        patch["status"]["ready"] = 1
        await self.client.patch("Job", namespace, name, patch, status=True)

    def _mount(self, namespace: str, pod_spec: JSON, container: JSON, root: Path) -> dict[str, str]:
        """The container's volumes laid out under ``root``: mount path -> folder."""
        volumes = {v["name"]: v for v in pod_spec.get("volumes") or ()}
        mounted: dict[str, str] = {}
        for mount in container.get("volumeMounts") or ():
            volume = volumes[mount["name"]]
            folder = root / "fs" / mount["mountPath"].lstrip("/")
            folder.mkdir(parents=True, exist_ok=True)
            if "secret" in volume:
                secret = self.kube.read("Secret", namespace, volume["secret"]["secretName"]) or {}
                for key, value in (secret.get("data") or {}).items():
                    target = folder / key
                    target.write_bytes(base64.b64decode(value))
                    target.chmod(volume["secret"].get("defaultMode", 0o644))
            mounted[mount["mountPath"]] = str(folder)
        return mounted

    @staticmethod
    def _inside(value: str, mounted: dict[str, str]) -> str:
        """An environment value naming a path in the container, as the path under the pod's folder."""
        for path, folder in sorted(mounted.items(), key=lambda item: -len(item[0])):
            if value == path or value.startswith(path.rstrip("/") + "/"):
                return folder + value[len(path) :]
        for path, folder in mounted.items():  # a parent of a mount (a credentials root)
            if path.startswith(value.rstrip("/") + "/"):
                return folder[: len(folder) - len(path) + len(value)]
        return value

    async def _ended(self, job: JSON, pod: Pod) -> None:
        code = pod.process.returncode
        namespace, name = pod.namespace, job["metadata"]["name"]
        if self.on_exit is not None:
            await self.on_exit(namespace, name)
        exit_code = pod.exit_code if pod.exit_code is not None else 137 if code < 0 else code
        code = exit_code if pod.exit_code is not None else code
        if pod.killed_for is not None or code < 0:
            terminated = {"reason": pod.killed_for or "Error", "exitCode": exit_code}
        else:
            terminated = {"reason": "Completed" if code == 0 else "Error", "exitCode": code}
        pod_status: JSON = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [{"name": "train", "state": {"terminated": terminated}}],
        }
        if pod.killed_for == "Evicted":
            pod_status["reason"] = "Evicted"
        with contextlib.suppress(Exception):  # the pod may have gone with its Job
            await self.client.patch("Pod", namespace, pod.name, {"status": pod_status}, status=True)
        if self.kube.read("Job", namespace, name) is None:
            return
        status = job.get("status") or {}
        if code == 0:
            done = {"type": "Complete", "status": "True", "lastTransitionTime": _now()}
            patch = {
                "status": {"active": 0, "ready": 0, "succeeded": 1, "completionTime": _now(), "conditions": [done]}
            }
            await self.client.patch("Job", namespace, name, patch, status=True)
            return
        failed = int(status.get("failed") or 0) + 1
        reason = None
        for rule in (job["spec"].get("podFailurePolicy") or {}).get("rules") or ():
            codes = (rule.get("onExitCodes") or {}).get("values") or ()
            if rule.get("action") == "FailJob" and exit_code in codes and pod.killed_for is None:
                reason = "PodFailurePolicy"
        if reason is None and failed > int(job["spec"].get("backoffLimit", 6)):
            reason = "BackoffLimitExceeded"
        patch = {"status": {"active": 0, "ready": 0, "failed": failed}}
        if reason is not None:
            patch["status"]["conditions"] = [
                {"type": "Failed", "status": "True", "reason": reason, "lastTransitionTime": _now()}
            ]
        await self.client.patch("Job", namespace, name, patch, status=True)

    def log(self, pod_name: str) -> str:
        found = next(self.root.glob(f"*/{pod_name}/log"), None)
        return found.read_text(errors="replace") if found else ""
