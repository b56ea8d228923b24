"""The kopf handlers: thin. They hand each event to the model's worker, which asks the engine.

- every watch event of a QuantumModel goes to its worker (workers.py), whose reconcile loop is an
  asyncio task started at the first event: a model with nothing to do costs one reconcile, one
  status write and no finalizer;
- a training daemon runs while a model's status says Training: it licenses its worker to train,
  and kopf holds the finalizer for as long as it runs, so deleting a model mid-training stops the
  training, closes its Runtime session and only then lets the model go;
- a timer per scheduled model pokes the worker when the engine's requeue time has come;
- every watch event of a QuantumPipeline goes to its worker (pipelines.py), which validates it and
  runs it with the engine; a training daemon runs while its status says Running (a run is under
  way), licensing its cells' trainings, and a model's events wake the pipelines of that model;
- a QuantumPolicy's events (a cluster-wide install) keep the floors in force; a change wakes every model;
- with ``--executor jobs``, the training Jobs' watch posts Events on their model and wakes it (and
  its pipelines, for a cell); the evaluation Jobs' watch wakes the pipelines of their model;
- the admission webhook (webhook.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from controller.api import API_VERSION, GROUP, VERSION
from controller.api.quantummodel import Phase
from controller.operator import jobs, pipelines, webhook
from controller.operator.runtime import Runtime
from controller.operator.settings import FINALIZER
from controller.operator.workers import ModelWorker

SCHEDULE_CHECK_SECONDS = 30.0
# A model whose versions or champion a pipeline changed looks again this long after the first such
# change not looked at yet: its status follows a sweep's registrations in one reconcile per wave.
MOVED_SETTLE_SECONDS = 5.0
# A deleted model's training daemon is never cancelled: its training stops before its next primitive
# job, and only then is its Runtime session closed and the finalizer released (a cancelled daemon
# would close the session under a job still running). kopf looks whether it has ended this often.
STOP_POLL_SECONDS = 1.0


class Models:
    def __init__(self, runtime: Runtime, pipelines: pipelines.Pipelines) -> None:
        self.runtime = runtime
        self.pipelines = pipelines
        self.workers: dict[str, ModelWorker] = {}
        self.jobs = jobs.JobWatch(runtime.client, runtime.metrics)
        self.moved_settle = MOVED_SETTLE_SECONDS

    def worker(self, uid: str, name: str, namespace: str | None) -> ModelWorker:
        found = self.workers.get(uid)
        if found is None:
            found = self.workers[uid] = ModelWorker(self.runtime, namespace or "", name, uid)
            found.pipeline_backends = self.pipelines.backends_of
        return found

    async def event(
        self, *, event: Mapping[str, Any], body: kopf.Body, uid: str, name: str, namespace: str | None, **_: Any
    ) -> None:
        if event.get("type") == "DELETED":
            await self.gone(uid)
            self.pipelines.model_gone(namespace or "", name)
            return
        worker = self.worker(uid, name, namespace)
        worker.seen(body)
        if _held_without_daemon(body, worker):
            await self.release(worker, body)  # before kopf lets the model go, in this same cycle
        meta = body.get("metadata") or {}
        await self.pipelines.model_seen(
            namespace or "", name, meta.get("generation"), deleting=bool(meta.get("deletionTimestamp"))
        )

    def poke(self, namespace: str, name: str) -> None:
        """A pipeline changed the model's versions or champion: its worker looks again, ``moved_settle``
        seconds after the first such change not looked at yet (a sweep whose cells end one after another
        is shown by one reconcile of the model, not one per registration)."""
        soon = time.monotonic() + self.moved_settle
        for worker in self.workers.values():
            if (worker.ref.namespace, worker.ref.name) == (namespace, name):
                worker.next_at = soon if worker.next_at is None else min(worker.next_at, soon)  # as a schedule
                worker.poke()

    async def job(self, *, event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        """A training Job changed (the jobs executor): Events on the model for a retry, a failure or
        its end; once it has ended, its model's worker looks again (it registers what finished)."""
        owners = (body.get("metadata") or {}).get("ownerReferences") or ()
        worker = next((self.workers[o["uid"]] for o in owners if o.get("uid") in self.workers), None)
        if event.get("type") == "DELETED":
            self.jobs.forget(str(body.get("metadata", {}).get("uid")))
            return
        for kind, reason, message in await self.jobs.observe(body):
            if worker is not None:
                kopf.event(worker.body, type=kind, reason=reason, message=message)
        found = (body.get("metadata") or {}).get("labels") or {}
        model, cell = found.get(jobs.MODEL_LABEL), found.get(jobs.OWNER_LABEL) == "pipeline"
        namespace = str(body.get("metadata", {}).get("namespace"))

        def look_again() -> None:
            # a cell's Job is its pipelines' to register (they wake the model when they have); a model's
            # own Job is the model's
            if cell and model:
                self.pipelines.job_ended(namespace, str(model))
            elif worker is not None:
                worker.job_moved()

        def recovered() -> None:  # its pod runs at last: a model (or pipeline) stalled on its image looks again
            if cell and model:
                self.pipelines.job_recovered(namespace, str(model))
            elif worker is not None and worker.waits_for_image:
                worker.job_moved()

        if jobs.finished(body):  # only an ended Job changes what a reconcile does
            look_again()
        self.jobs.wake_if_pending(body, look_again, recovered)  # or one whose pod waits too long (its image)

    async def policy(self, *, event: Mapping[str, Any], name: str, **kwargs: Any) -> None:
        """A QuantumPolicy added, changed or deleted: the runtime keeps it, and when what is in force
        changed every model looks again (its floors, and its packs: policy.json written or removed)."""
        before = self.runtime.policies.get(name)
        self.runtime.policy_event(event=event, name=name, **kwargs)
        if self.runtime.policies.get(name) != before:
            for worker in self.workers.values():
                worker.policy_moved()

    async def evaluation_job(self, *, event: Mapping[str, Any], body: kopf.Body, **_: Any) -> None:
        """An evaluation Job changed (a pipeline's evaluate step, the jobs executor): once it has
        ended, the pipelines of its model look again (its result is theirs to record); and when it has
        had no ready pod for the grace (its image), and once such a Job's pod runs."""
        meta = body.get("metadata") or {}
        model = (meta.get("labels") or {}).get(jobs.MODEL_LABEL)
        if event.get("type") == "DELETED":
            self.jobs.forget(str(meta.get("uid")))
            return
        if not model:
            return
        namespace = str(meta.get("namespace"))
        if jobs.finished(body):
            self.pipelines.job_ended(namespace, str(model))
        # one whose pod waits too long (its image): its pipelines look, and again once it runs
        self.jobs.wake_if_pending(
            body,
            lambda: self.pipelines.job_ended(namespace, str(model)),
            lambda: self.pipelines.job_recovered(namespace, str(model)),
        )

    async def training(
        self, *, body: kopf.Body, uid: str, name: str, namespace: str | None, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        worker = self.worker(uid, name, namespace)
        await worker.licensed(stopped)
        if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
            await self.release(worker, body)

    async def release(self, worker: ModelWorker, body: kopf.Body) -> None:
        await worker.close()
        closed = await worker.release(body)
        session = "; its Runtime session closed" if closed else ""
        kopf.info(body, reason="Released", message=f"training stopped{session}; its history stays in Git")

    async def gone(self, uid: str) -> None:
        worker = self.workers.pop(uid, None)
        if worker is not None:
            await worker.close()
            if not worker.released:
                worker.forget()

    async def timer(self, *, uid: str, **_: Any) -> None:
        worker = self.workers.get(uid)
        if worker is not None and worker.schedule_due():
            worker.poke()

    async def cleanup(self, **kwargs: Any) -> None:
        """The operator stops: trainings stop at their next iteration, checkpoints kept."""
        self.runtime.closing.set()
        await asyncio.gather(*(worker.close() for worker in list(self.workers.values())), self.pipelines.cleanup())
        await self.runtime.cleanup(**kwargs)


def _held_without_daemon(body: kopf.Body, worker: ModelWorker) -> bool:
    """A deleted model that the finalizer holds while no training daemon runs (its daemon was not
    spawned: the operator started after the deletion, or a schedule's timer held it)."""
    meta = body.get("metadata") or {}
    held = FINALIZER in (meta.get("finalizers") or ())
    return bool(meta.get("deletionTimestamp")) and held and worker.licence is None and not worker.released


def _training(status: kopf.Status, **_: Any) -> bool:
    return status.get("phase") == Phase.TRAINING.value


def _scheduled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("training") or {}).get("schedule"))


def build_registry(runtime: Runtime, *, login: Callable[..., Any] | None = None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    reviewer = pipelines.Pipelines(runtime)
    models = Models(runtime, reviewer)
    reviewer.on_model_moved = models.poke
    kopf.on.login(registry=registry)(login or runtime.login)
    kopf.on.startup(registry=registry)(runtime.startup)
    kopf.on.cleanup(registry=registry)(models.cleanup)
    if runtime.config.webhook is not None:  # kopf refuses admission handlers without a server to serve them
        read = lambda namespace, name: runtime.read(API_VERSION, "quantummodels", namespace, name)  # noqa: E731
        webhook.register(registry, read, ceiling=runtime.config.job_ceiling)

    kopf.on.event(GROUP, VERSION, "quantummodels", id="reconcile", registry=registry)(models.event)
    kopf.daemon(
        GROUP,
        VERSION,
        "quantummodels",
        id="training",
        when=_training,
        cancellation_polling=STOP_POLL_SECONDS,
        registry=registry,
    )(models.training)
    kopf.timer(
        GROUP,
        VERSION,
        "quantummodels",
        id="schedule",
        interval=SCHEDULE_CHECK_SECONDS,
        when=_scheduled,
        registry=registry,
    )(models.timer)

    kopf.on.event(GROUP, VERSION, "quantumpipelines", id="reconcile", registry=registry)(reviewer.event)
    kopf.daemon(
        GROUP,
        VERSION,
        "quantumpipelines",
        id="training",
        when=pipelines.running,
        cancellation_polling=STOP_POLL_SECONDS,
        registry=registry,
    )(reviewer.training)
    if not runtime.config.namespaces:  # cluster-scoped: watched by a cluster-wide install only
        kopf.on.event(GROUP, VERSION, "quantumpolicies", id="policies", registry=registry)(models.policy)
    if runtime.config.executor == "jobs":  # the Jobs' own watch: no pod is polled
        kopf.on.event(
            "batch", "v1", "jobs", id="training-jobs", labels={jobs.COMPONENT_LABEL: jobs.COMPONENT}, registry=registry
        )(models.job)
        kopf.on.event(
            "batch",
            "v1",
            "jobs",
            id="evaluation-jobs",
            labels={jobs.COMPONENT_LABEL: jobs.EVALUATION},
            registry=registry,
        )(models.evaluation_job)

    @kopf.on.probe(id="workers", registry=registry)
    def workers(**_: Any) -> dict[str, int]:
        return {"models": len(models.workers), "pipelines": len(reviewer.workers)}

    return registry
