"""The kopf handlers: thin. They hand each event to the model's worker, which asks the engine.

- a daemon per QuantumModel runs its worker (workers.py) for as long as the model exists: kopf holds
  the finalizer until the daemon has stopped, so deleting a model stops its training first;
- every watch event pokes the model's worker (a new generation, the requestedAt annotation);
- a timer per scheduled model pokes the worker when the engine's requeue time has come;
- QuantumPipelines are validated and get a status (pipelines.py);
- the admission webhook (webhook.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kopf

from controller.api import GROUP, VERSION
from controller.operator import pipelines, webhook
from controller.operator.runtime import Runtime
from controller.operator.workers import ModelWorker

SCHEDULE_CHECK_SECONDS = 30.0
# A deleted model's daemon is never cancelled: its training stops before its next primitive job, and
# only then is its Runtime session closed and the finalizer released (a cancelled daemon would close
# the session under a job still running). kopf looks whether it has ended this often.
STOP_POLL_SECONDS = 1.0


class Models:
    def __init__(self, runtime: Runtime, pipelines: pipelines.Pipelines) -> None:
        self.runtime = runtime
        self.pipelines = pipelines
        self.workers: dict[str, ModelWorker] = {}

    async def event(self, *, uid: str, name: str, namespace: str | None, **_: Any) -> None:
        worker = self.workers.get(uid)
        if worker is not None:
            worker.poke()
        if (namespace or "", name) in self.pipelines.waiting:
            await self.pipelines.model_seen(namespace or "", name)

    async def daemon(
        self, *, body: kopf.Body, uid: str, name: str, namespace: str | None, stopped: kopf.DaemonStopped, **_: Any
    ) -> None:
        worker = self.workers.setdefault(uid, ModelWorker(self.runtime, namespace or "", name, uid))
        try:
            await worker.run(body, stopped)
        finally:
            if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
                self.workers.pop(uid, None)
                closed = await worker.release(body)
                session = "; its Runtime session closed" if closed else ""
                kopf.info(body, reason="Released", message=f"training stopped{session}; its history stays in Git")

    async def timer(self, *, uid: str, **_: Any) -> None:
        worker = self.workers.get(uid)
        if worker is not None and worker.schedule_due():
            worker.poke()


def _scheduled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("training") or {}).get("schedule"))


def build_registry(runtime: Runtime, *, login: Callable[..., Any] | None = None) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login or runtime.login)
    kopf.on.startup(registry=registry)(runtime.startup)
    kopf.on.cleanup(registry=registry)(runtime.cleanup)
    if runtime.config.webhook is not None:  # kopf refuses admission handlers without a server to serve them
        webhook.register(registry)

    reviewer = pipelines.Pipelines(runtime)
    models = Models(runtime, reviewer)
    kopf.on.event(GROUP, VERSION, "quantummodels", id="poke", registry=registry)(models.event)
    kopf.daemon(
        GROUP,
        VERSION,
        "quantummodels",
        id="reconcile",
        cancellation_polling=STOP_POLL_SECONDS,
        registry=registry,
    )(models.daemon)
    kopf.timer(
        GROUP,
        VERSION,
        "quantummodels",
        id="schedule",
        interval=SCHEDULE_CHECK_SECONDS,
        when=_scheduled,
        registry=registry,
    )(models.timer)

    kopf.on.event(GROUP, VERSION, "quantumpipelines", id="validate", registry=registry)(reviewer.event)

    @kopf.on.probe(id="workers", registry=registry)
    def workers(**_: Any) -> dict[str, int]:
        return {"models": len(models.workers)}

    return registry
