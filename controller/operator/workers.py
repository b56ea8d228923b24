"""One worker per QuantumModel: its reconcile loop, an asyncio task for as long as the model is seen.

It reconciles when something asks for it (a new generation, the ``requestedAt`` annotation, a schedule
that came due, a retry after a failure, or the operator starting), one reconcile at a time for this
model, on the runtime's pool. What the engine returns becomes the status, a Kubernetes Event per
decision, and metrics; the training checkpoint is copied to its ConfigMap after every iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import kopf
from pydantic import ValidationError

from controller.api import API_VERSION, QuantumModel
from controller.api.quantummodel import (
    REVISION_PATTERN,
    Phase,
    QuantumModelSpec,
    QuantumModelStatus,
    Serving,
    SourceRef,
    TrainingStatus,
)
from controller.engine import status as engine_status
from controller.engine import training
from controller.engine.decisions import CHAMPION_KINDS, LedgerKind
from controller.engine.reconcile import Decision, Observed, Outcome, TrainingDue, Workspaces
from controller.engine.reconcile.workspace import KEY
from controller.engine.text import scrub
from controller.operator import checkpoints, checks, jobs
from controller.operator import serving as serving_objects
from controller.operator.kube import merge_diff, resource_path
from controller.operator.loops import LicensedLoop
from controller.operator.runtime import Runtime
from controller.operator.settings import REQUESTED_AT
from controller.shells.gitsource import redact

log = logging.getLogger(__name__)

SOURCE_ANNOTATIONS = {
    "repository": "qmlops.io/source-repository",
    "revision": "qmlops.io/source-revision",
    "path": "qmlops.io/source-path",
    "author": "qmlops.io/source-author",
}
PROGRESS_INTERVAL = 1.0  # seconds between two status updates while training
_METADATA = (
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
)


@dataclass
class Reading:
    """What the worker read from the live object for one reconcile."""

    observed: Observed | None
    generation: int | None
    requested_at: str | None
    problem: str | None = None


def read(body: Mapping[str, Any], status: Mapping[str, Any] | None = None) -> Reading:
    """The QuantumModel as the engine takes it, with ``status`` (default: the body's) as its previous
    status; a spec the types refuse is a problem, not a crash."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    requested = annotations.get(REQUESTED_AT)
    plain = {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": "QuantumModel",
        "metadata": {k: meta[k] for k in _METADATA if k in meta},
        "spec": body.get("spec") or {},
    }
    previous = body.get("status") if status is None else status
    if previous:
        plain["status"] = dict(previous)
    try:
        model = QuantumModel.model_validate(plain)
    except ValidationError:
        plain.pop("status", None)  # a status the types no longer read: the engine rebuilds it
        try:
            model = QuantumModel.model_validate(plain)
        except ValidationError as err:
            fields = sorted({".".join(str(p) for p in e["loc"]) for e in err.errors()})
            return Reading(None, meta.get("generation"), requested, "invalid spec at " + ", ".join(fields))
    return Reading(
        Observed(model=model, source=source(annotations), requested_at=requested), meta.get("generation"), requested
    )


def unread(body: Mapping[str, Any]) -> Reading:
    """What a reconcile knows of a model whose spec could not be read in time."""
    meta = body.get("metadata") or {}
    return Reading(None, meta.get("generation"), (meta.get("annotations") or {}).get(REQUESTED_AT))


def source(annotations: Mapping[str, str]) -> SourceRef:
    """Where the spec came from, as far as the object says (annotations set by CI or a GitOps tool)."""
    import re

    values = {key: annotations.get(name) for key, name in SOURCE_ANNOTATIONS.items()}
    if values["revision"] and not re.fullmatch(REVISION_PATTERN, values["revision"]):
        values["revision"] = None
    return SourceRef(**values)


class ModelWorker(LicensedLoop):
    """The model's reconcile loop, an asyncio task of its own started at its first watch event.

    It may start a training only while the model's training daemon holds a licence (the daemon's
    stop flag): kopf keeps the finalizer for exactly as long as that daemon runs, so a model with
    a training to stop blocks its deletion until the training has stopped and its session is
    closed, and a model with nothing running does not. Without the licence a reconcile stops where
    a training is due (``TrainingDue``) and says so in status; that status spawns the daemon."""

    def __init__(self, runtime: Runtime, namespace: str, name: str, uid: str) -> None:
        super().__init__(runtime, f"qmlops-model:{namespace}/{name}")
        self.ref = checkpoints.ModelRef(namespace=namespace, name=name, uid=uid)
        self.first = True
        self.generation: int | None = None
        self.requested_at: str | None = None
        self.next_at: float | None = None  # when the engine asked to look again (a schedule)
        # the backends the model's pipelines evaluate on (set by the operator's Models, which knows them)
        self.pipeline_backends: Callable[[str, str], tuple[str, ...]] | None = None
        self._last_progress = 0.0
        self.written: dict[str, Any] | None = None
        self.job_changed = False  # a training Job of this model changed since the last reconcile began
        self.policy_changed = False  # a QuantumPolicy changed since the last reconcile began
        self.released = False
        self.serving = False  # this worker wrote the model's serving Deployment and Service
        # look at the model's own training Jobs and ConfigMaps at the next reconcile even outside the
        # Training phase: at the first (an operator restarted may find trainings stopped and not
        # recorded), and after a recording that failed (what is left is read from the cluster)
        self.settle_due = True
        self.settle_failures = 0
        self.waits_for_image = False  # the last reconcile failed on its Job's image (jobs.JobWaitsForImage)

    @property
    def status_path(self) -> str:
        return resource_path(API_VERSION, "quantummodels", self.ref.namespace, self.ref.name, "status")

    def poke(self) -> None:
        self.wake.set()

    def job_moved(self) -> None:
        """One of the model's training Jobs changed (the jobs executor): look again."""
        self.job_changed = True
        self.wake.set()

    def policy_moved(self) -> None:
        """A QuantumPolicy was added, changed or deleted: its floors and packs may now apply (or not)."""
        self.policy_changed = True
        self.wake.set()

    def schedule_due(self) -> bool:
        return self.next_at is not None and time.monotonic() >= self.next_at

    def due(self, body: Mapping[str, Any]) -> str | None:
        meta = body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        if self.first:
            return "start"
        # what was last attempted, even if it failed: a change does not wait for the retry backoff
        if meta.get("generation") != self.generation:
            return "spec changed"
        if (meta.get("annotations") or {}).get(REQUESTED_AT) != self.requested_at:
            return "requested"
        if self.job_changed:
            return "training job changed"
        if self.policy_changed:
            return "a QuantumPolicy changed"
        if self.retry_at is not None and time.monotonic() >= self.retry_at:
            return "retry"
        if self.schedule_due():
            return "schedule"
        return None

    def _wait_timeout(self) -> float | None:
        if self._waiting_for_licence():
            return None  # the daemon's start wakes the loop
        moments = [t for t in (self.retry_at, self.next_at) if t is not None]
        return max(0.0, min(moments) - time.monotonic()) if moments else None

    async def run(self) -> None:
        while not self.closed:
            reason = self.due(self.body)
            if reason is not None and not self._waiting_for_licence():
                await self.reconcile(self.body, reason)
                continue
            self.wake.clear()
            if self.closed or self.due(self.body) is None or self._waiting_for_licence():
                await self._sleep()

    async def _sleep(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), self._wait_timeout())

    # --- one reconcile -----------------------------------------------------------------------------

    async def reconcile(self, body: kopf.Body, reason: str) -> None:
        with self._reconciling():
            async with self.runtime.ledger_lock(self.ref.namespace, self.ref.name):  # its pipelines wait
                await self._reconcile_once(body, reason)

    def _stop_for(self, licence: kopf.DaemonStopped | None) -> Callable[[], bool]:
        return lambda: self.closed or self.runtime.closing.is_set() or (licence is not None and bool(licence))

    async def _reconcile_once(self, body: kopf.Body, reason: str) -> None:
        self.job_changed = False
        self.policy_changed = False
        current = self._current(body)
        try:  # off the event loop: an OpenQASM ansatz is parsed here
            reading = await checks.run(lambda: read(body, current), checks.RECONCILE_BUDGET_SECONDS)
        except checks.CheckTimedOut as late:
            await self._failed(body, unread(body), late)
            return
        metrics = self.runtime.metrics
        if reading.observed is None:
            invalid = engine_status.invalid(
                self._current(body), reading.problem or "", reading.generation, self.runtime.clock()
            )
            await self._write_status(invalid)
            self._handled(reading)
            metrics.reconciles.labels(kind="QuantumModel", result="invalid").inc()
            return
        observed = reading.observed
        if self.pipeline_backends is not None:
            observed = replace(observed, pipeline_backends=self.pipeline_backends(self.ref.namespace, self.ref.name))
        if self.first:
            await self._restore()
        licence = self.licence
        if licence is not None:
            self.training_due = False  # licensed now; stopped or failed, the next look starts unlicensed
        stop = self._stop_for(licence)
        log.debug("reconciling %s/%s: %s", self.ref.namespace, self.ref.name, reason)
        try:
            outcome = await self.runtime.off_loop(
                lambda: self._reconcile(observed, stop, coalesce=reason == "start", may_train=licence is not None)
            )
        except TrainingDue as due:
            await self._training_due(body, reading, due)
            return
        except training.TrainingStopped as err:
            if stop():
                return  # stopped for deletion or shutdown; the checkpoint is kept for whoever resumes
            await self._failed(body, reading, err)
            return
        except Exception as err:  # the operator never dies on input: any failure is status and a retry
            await self._failed(body, reading, err)
            return
        self._recovered()
        self.waits_for_image = False
        self._handled(reading)
        self.next_at = self._next_look(outcome)
        await self._apply(body, outcome, observed, observed.model.spec.serving)
        metrics.reconciles.labels(kind="QuantumModel", result="ok").inc()

    async def _training_due(self, body: Mapping[str, Any], reading: Reading, due: TrainingDue) -> None:
        """Say that a training is due: the Training phase is what spawns the training daemon."""
        status = engine_status.training_due(self._current(body), str(due), reading.generation, self.runtime.clock())
        try:
            await self._write_status(status)
        except Exception as err:
            await self._failed(body, reading, err)
            return
        self.training_due = True

    def _next_look(self, outcome: Outcome) -> float | None:
        """When to reconcile again unasked: the engine's schedule, or soon when the model waits for
        approvals, which arrive as Git commits rather than Kubernetes events."""
        delays = [outcome.requeue_after] if outcome.requeue_after is not None else []
        if outcome.status.phase is Phase.EVALUATING:
            delays.append(self.runtime.config.approval_poll)
        return time.monotonic() + min(delays) if delays else None

    def _handled(self, reading: Reading) -> None:
        self.first = False
        self.generation = reading.generation
        self.requested_at = reading.requested_at

    async def _restore(self) -> None:
        """Once per worker, before its first reconcile: the training workspace a previous pod kept in
        the model's ConfigMap (checkpoint, or a finished artifact not yet registered) comes back to
        this pod's disk, unless this pod has one already."""
        folder = self.runtime.checkpoint_dir(self.ref.namespace, self.ref.name)
        if folder.is_dir() and any(folder.iterdir()):
            return
        try:
            recorded = checkpoints.recorded_digest(self.body)
            restored = await self.runtime.checkpoints.restore(self.ref, folder, recorded)
        except Exception as err:  # no checkpoint is no reason not to reconcile: it trains from scratch
            log.warning("%s/%s: checkpoint not restored: %s", self.ref.namespace, self.ref.name, type(err).__name__)
            return
        if restored:
            log.info("%s/%s: training workspace restored from its ConfigMap", self.ref.namespace, self.ref.name)

    def _reconcile(self, observed: Observed, stop: Callable[[], bool], *, coalesce: bool, may_train: bool) -> Outcome:
        """In a pool thread: the engine's reconcile. Only the first look at a model (every model at
        once, when the operator starts) may share a fetch made a moment ago, and only to find nothing
        to train: a training is paid for, so one due on that fetch is decided again on the remote as
        it is now (a replica taking over from one that stopped a moment ago fetched before the other
        pushed the version it registered)."""
        if coalesce:
            try:
                return self.runtime.reconciler(coalesce=True).reconcile(
                    observed, on_progress=self._progress, should_stop=stop, may_train=False
                )
            except TrainingDue:
                pass
        reconciler = self.runtime.reconciler()
        return reconciler.reconcile(observed, on_progress=self._progress, should_stop=stop, may_train=may_train)

    def _progress(self, progress: training.Progress) -> None:
        """In a pool thread, after each iteration: count it, keep the checkpoint, show it in status."""
        self.runtime.metrics.iterations.inc()
        folder = self.runtime.checkpoint_dir(self.ref.namespace, self.ref.name)
        try:
            self.runtime.on_loop(self.runtime.checkpoints.save(self.ref, folder))
        except checkpoints.CheckpointTooLarge as err:
            log.warning("%s/%s: %s; kept on this pod only", self.ref.namespace, self.ref.name, err)
        except Exception as err:  # training goes on; the next iteration tries again
            log.warning("%s/%s: checkpoint not kept: %s", self.ref.namespace, self.ref.name, type(err).__name__)
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL:
            self._last_progress = now
            self.runtime.on_loop(self._show_progress(progress))

    async def _show_progress(self, progress: training.Progress) -> None:
        body = self.body
        meta = body.get("metadata") or {}
        new = progress_status(self._current(body), progress, meta.get("generation"), self.runtime.clock())
        try:
            await self._write_status(new)
        except Exception as err:  # progress is a courtesy: the outcome's status follows anyway
            log.debug("%s/%s: progress not shown: %s", self.ref.namespace, self.ref.name, err)

    # --- deletion ----------------------------------------------------------------------------------

    async def release(self, body: Mapping[str, Any]) -> bool:
        """The model was deleted and its training stopped: close the Runtime session the training kept
        open for a resume, and drop its workspace from this pod's disk (the ConfigMap goes with the
        model, as its owner). True when a session was closed. History stays in Git."""
        self.released = True
        try:
            reading = await checks.run(lambda: read(body), checks.RECONCILE_BUDGET_SECONDS)
        except checks.CheckTimedOut:
            reading = unread(body)
        closed = False
        if reading.observed is not None:
            await self._restore()  # the session id is in the checkpoint, perhaps only in the ConfigMap
            if self.runtime.config.executor == "jobs":
                await self._stop_jobs(reading.observed)
            spec = reading.observed.model.spec
            kept = Workspaces(self.runtime.checkpoint_root, self.ref.namespace, self.ref.name).all()
            secret = spec.training.credentials_secret
            credentials = (lambda: self.runtime.credentials(self.ref.namespace, secret)) if secret else None
            for workspace in kept:  # each training's own session
                try:
                    # not on the reconcile pool: a deletion does not wait for other models' trainings
                    released = await asyncio.to_thread(training.release, spec, workspace.checkpoint_dir, credentials)
                    closed = closed or released
                except Exception as err:  # best effort: an unreachable IBM must not hold the finalizer
                    log.warning("%s/%s: session not closed: %s", self.ref.namespace, self.ref.name, type(err).__name__)
        self.forget()
        return closed

    def forget(self) -> None:
        """Drop what this pod keeps of the model (its training workspace)."""
        shutil.rmtree(self.runtime.checkpoint_dir(self.ref.namespace, self.ref.name), ignore_errors=True)
        self.runtime.checkpoints.forget(self.ref)

    # --- carrying out what the engine decided ------------------------------------------------------

    async def _apply(
        self, body: kopf.Body, outcome: Outcome, observed: Observed, serving: Serving | None = None
    ) -> None:
        before = self._current(body)
        new = outcome.status.to_wire()
        await self._write_status(new)
        alert = "alert" in (((body.get("spec") or {}).get("monitoring") or {}).get("onDrift") or [])
        job = (new.get("training") or {}).get("job")
        if job and job != (before.get("training") or {}).get("job"):
            kopf.info(body, reason="TrainingJobStarted", message=f"training in Job {job}")
        for decision in outcome.decisions:
            if decision.kind == LedgerKind.DRIFT_DETECTED and not alert:
                continue  # recorded in the ledger; an Event and the counter only with onDrift: alert
            self._event(body, decision)
        training = "Training" in (before.get("phase"), new.get("phase"))
        if self.runtime.config.executor == "jobs" and (training or self.settle_due):
            await self._settle_jobs(observed, job if new.get("phase") == "Training" else None)
        self._count(before, new, outcome.decisions, alert)
        await self._serve(serving)
        folder = self.runtime.checkpoint_dir(self.ref.namespace, self.ref.name)
        try:
            await self.runtime.checkpoints.save(self.ref, folder)
        except Exception as err:
            log.warning("%s/%s: checkpoint not kept: %s", self.ref.namespace, self.ref.name, type(err).__name__)

    async def _settle_jobs(self, observed: Observed, training: str | None) -> None:
        """A reconcile that began or ended in the Training phase (or the first, or one after a recording
        that failed): of the model's own training Jobs (a pipeline's cells are its own), ``training``'s
        (the one this reconcile found running) stays; a finished one goes with its ConfigMap (its
        version registered, or its failure recorded); one still running is superseded (the spec moved
        on, or asks for nothing to train): it is stopped and its Runtime session closed. Then every
        training stopped and not recorded yet, as the cluster has them (``jobs.without_job``: the
        model's own training ConfigMaps whose Job is gone, not ``training``'s; stopped just now, or
        before by this pod or one before it), is recorded (``stopped``, pushed) and its ConfigMap goes;
        when recording fails they stay, and the reconcile after the failure backoff records them."""
        client, ns = self.runtime.client, self.ref.namespace
        try:
            for job in await jobs.model_trainings(client, ns, self.ref.name, owner="model"):
                name = job["metadata"]["name"]
                if name == training:
                    continue
                if jobs.finished(job):
                    await jobs.delete_training(client, ns, name)
                    continue
                log.info("%s/%s: Job %s is superseded: stopped", ns, self.ref.name, name)
                await jobs.stop_job(client, ns, name)
            configmaps = await jobs.training_configmaps(client, ns, self.ref.name, owner="model")
            left = []
            for configmap in jobs.without_job(configmaps, training):
                if jobs.ended(configmap):  # its Job deleted by someone else: nothing to record
                    await jobs.delete_training(client, ns, configmap["metadata"]["name"])
                else:  # stopped: its session closed, unless closed before
                    await self._close_session(configmap)
                    left.append(configmap)
            if not await self._record_stopped(observed, left):
                self._settle_again()
                return
            for configmap in left:
                await jobs.delete_training(client, ns, configmap["metadata"]["name"])
            self.settle_due, self.settle_failures = False, 0
        except Exception as err:  # looked at again; they go with the model at the latest
            self._settle_again()
            log.warning("%s/%s: training Jobs not settled: %s", ns, self.ref.name, type(err).__name__)

    def _settle_again(self) -> None:
        """The training Jobs are looked at again after the failure backoff, even if nothing else moves."""
        self.settle_due = True
        self._retry_after(self.settle_failures)
        self.settle_failures += 1

    async def _close_session(self, configmap: Mapping[str, Any]) -> None:
        """The Runtime session a stopped Job's training kept open (``ibm:`` backends), closed: its spec
        and checkpoint are read from its ConfigMap (nothing resumes it), which then says so
        (``jobs.SESSION_CLOSED``: a later look, by this pod or the next, does not close it again). Best
        effort, as on deletion: IBM ends an idle session itself."""
        meta = configmap.get("metadata") or {}
        name = str(meta.get("name"))
        if jobs.SESSION_CLOSED in (meta.get("annotations") or {}):
            return
        try:
            spec = QuantumModelSpec.model_validate_json((configmap.get("data") or {}).get(jobs.SPEC_KEY) or "{}")
            if not spec.training.backend.startswith("ibm:"):
                return
            secret = spec.training.credentials_secret
            credentials = (lambda: self.runtime.credentials(self.ref.namespace, secret)) if secret else None
            with tempfile.TemporaryDirectory(prefix="qmlops-stopped-") as folder:
                jobs.unpack_checkpoint(configmap, Path(folder))
                await asyncio.to_thread(training.release, spec, Path(folder), credentials)
            closed = {"metadata": {"annotations": {jobs.SESSION_CLOSED: "true"}}}
            await self.runtime.client.merge_patch(resource_path("v1", "configmaps", self.ref.namespace, name), closed)
        except Exception as err:
            log.warning(
                "%s/%s: session of Job %s not closed: %s", self.ref.namespace, self.ref.name, name, type(err).__name__
            )

    async def _record_stopped(self, observed: Observed, configmaps: Sequence[Mapping[str, Any]]) -> bool:
        """What the stopped trainings of ``configmaps`` spent (their checkpoint journals) recorded in the
        model's ledger as ``stopped`` entries and pushed (the engine's ``record_stopped``: each second
        counted once, however often asked); whether that was done."""
        stopped = [found for found in map(jobs.spent_in, configmaps) if found is not None]
        if not stopped:
            return True
        try:
            decisions = await self.runtime.off_loop(lambda: self.runtime.reconciler().record_stopped(observed, stopped))
        except Exception as err:  # kept: the ConfigMaps stay, and the next look records them
            log.warning(
                "%s/%s: stopped trainings not recorded: %s", self.ref.namespace, self.ref.name, type(err).__name__
            )
            return False
        for decision in decisions:
            self._event(self.body, decision)
        return True

    async def _stop_jobs(self, observed: Observed) -> None:
        """The model is deleted: its training Jobs are stopped (deleted), what every stopped training
        spent is recorded (``stopped``, pushed before the ConfigMaps go with the model: the Jobs stopped
        now, and those stopped before and not recorded yet, whoever stopped them), and their checkpoints
        brought here so that the Runtime sessions they kept open are closed."""
        client = self.runtime.client
        workspaces = Workspaces(self.runtime.checkpoint_root, self.ref.namespace, self.ref.name)
        try:
            for job in await jobs.model_trainings(client, self.ref.namespace, self.ref.name):
                name, key = job["metadata"]["name"], (job["metadata"].get("labels") or {}).get(jobs.KEY_LABEL, "")
                await jobs.stop_job(client, self.ref.namespace, name)
                if KEY.fullmatch(key):
                    workspace = workspaces.of(key)
                    await jobs.kept_checkpoint(client, self.ref.namespace, name, workspace.checkpoint_dir)
            configmaps = await jobs.training_configmaps(client, self.ref.namespace, self.ref.name)
            async with self.runtime.ledger_lock(self.ref.namespace, self.ref.name):
                await self._record_stopped(observed, [c for c in configmaps if not jobs.ended(c)])
        except Exception as err:  # best effort: the Jobs go with the model (owner references)
            log.warning("%s/%s: training Jobs not stopped: %s", self.ref.namespace, self.ref.name, type(err).__name__)

    async def _serve(self, serving: Serving | None) -> None:
        """``spec.serving``: the model's Deployment and Service brought to what it asks (or removed)."""
        if serving is None and not self.serving:
            return
        config = self.runtime.config
        setup = serving_objects.ServingSetup(
            image=config.serving_image, repo=config.repo, branch=config.branch, git_secret=config.serving_git_secret
        )
        try:
            self.serving = await serving_objects.sync(self.runtime.client, self.ref, serving, setup, wrote=self.serving)
        except Exception as err:  # serving is not the reconcile: its trouble is logged and tried again next time
            log.warning("%s/%s: serving objects not written: %s", self.ref.namespace, self.ref.name, type(err).__name__)

    async def _write_status(self, new: dict[str, Any]) -> None:
        """Write ``new`` as the whole status: a merge patch from what the status is now (what this
        worker wrote last, when the watch has not brought it back yet)."""
        patch = merge_diff(self._current(self.body), new)
        if patch:
            await self._patch_status({"status": patch})
        self.written = new

    def _current(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The status as it is: what this worker wrote last, when the watch has not brought it back."""
        return dict(self.written) if self.written is not None else _status_of(body)

    async def _patch_status(self, patch: dict[str, Any]) -> None:
        await self.runtime.client.merge_patch(self.status_path, patch)

    def _event(self, body: kopf.Body, decision: Decision) -> None:
        kind = "Warning" if decision.kind.warns else "Normal"
        reason = decision.kind.event_reason
        where = f" (commit {decision.commit[:12]})" if decision.commit else ""
        version = f"version {decision.version}: " if decision.version is not None else ""
        kopf.event(body, type=kind, reason=reason, message=scrub(f"{version}{decision.message}{where}"))

    def _count(
        self, before: Mapping[str, Any], after: Mapping[str, Any], decisions: list[Decision], alert: bool = False
    ) -> None:
        metrics = self.runtime.metrics
        labels = {"namespace": self.ref.namespace, "model": self.ref.name}
        for decision in decisions:
            metrics.decisions.labels(kind=decision.kind).inc()
            if decision.kind in CHAMPION_KINDS:
                metrics.promotions.inc()
            if decision.kind == LedgerKind.DRIFT_DETECTED and alert:
                metrics.drifts.labels(**labels).inc()
        champion = after.get("champion") or {}
        if champion.get("version"):
            metrics.champion_version.labels(**labels).set(champion["version"])
        watched = after.get("monitoring") or {}
        for gauge, field in (
            (metrics.esp, "esp"),
            (metrics.esp_at_training, "espAtTraining"),
            (metrics.replay_accuracy, "replayAccuracy"),
            (metrics.live_accuracy, "liveAccuracy"),
            (metrics.champion_accuracy, "championAccuracy"),
        ):
            if isinstance(watched.get(field), int | float):
                gauge.labels(**labels).set(watched[field])
        used = (after.get("usage") or {}).get("qpuSeconds", 0.0) - (before.get("usage") or {}).get("qpuSeconds", 0.0)
        if used > 0:
            metrics.qpu_seconds.inc(used)

    async def _failed(self, body: Mapping[str, Any], reading: Reading, err: Exception) -> None:
        self.waits_for_image = isinstance(err, jobs.JobWaitsForImage)
        delay = self._back_off()
        reason = type(err).__name__
        message = engine_status.describe_failure(redacted(err))
        log.warning(
            "%s/%s: reconcile failed (%s), retrying in %.0fs: %s",
            self.ref.namespace,
            self.ref.name,
            reason,
            delay,
            message,
        )
        self._handled(reading)
        self.last_failure = failure_event(body, reason, message, self.last_failure)
        self.runtime.metrics.failures.labels(reason=reason).inc()
        self.runtime.metrics.reconciles.labels(kind="QuantumModel", result="failed").inc()
        try:
            failed = engine_status.failed(self._current(body), redacted(err), reading.generation, self.runtime.clock())
            await self._write_status(failed)
        except Exception as write_err:
            log.warning("%s/%s: status not written: %s", self.ref.namespace, self.ref.name, type(write_err).__name__)


def failure_event(body: Mapping[str, Any], reason: str, message: str, last: str | None) -> str:
    """A Warning Event ``ReconcileFailed`` for a failed reconcile, once per distinct failure: a retry
    that fails the same way says nothing new. Returns what was announced (scrubbed, bounded)."""
    text = scrub(f"{reason}: {message}")[:1024]
    if text != last and (body.get("metadata") or {}).get("uid"):
        kopf.event(cast(kopf.Body, body), type="Warning", reason="ReconcileFailed", message=text)
    return text


def progress_status(
    previous: Mapping[str, Any], progress: training.Progress, generation: int | None, now: datetime
) -> dict[str, Any]:
    """The status while a training runs: Training, Reconciling, with the iteration and loss so far;
    what the model had (versions, champion, policy) is kept."""
    try:
        before = QuantumModelStatus.model_validate(dict(previous))
    except ValidationError:
        before = None
    running = TrainingStatus(
        run=getattr(progress, "run", None),
        iteration=getattr(progress, "iteration", None),
        max_iterations=getattr(progress, "max_iterations", None),
        loss=getattr(progress, "loss", None),
        backend=getattr(progress, "backend", None),
        session_id=getattr(progress, "session_id", None),
        started=getattr(progress, "started", None),
    )
    facts = engine_status.Facts(
        generation=generation,
        training_state="running",
        training_message=f"training: iteration {running.iteration} of {running.max_iterations}",
        training=running,
    )
    if before is not None:
        facts.latest, facts.champion, facts.usage = before.latest_version, before.champion, before.usage
        facts.source, facts.policy = before.source, before.policy
        facts.requested_at = before.last_handled_reconcile_at
        facts.promotion_state = "champion" if before.champion is not None else "none"
    return engine_status.build(before, facts, now).to_wire()


def redacted(err: Exception) -> Exception:
    """``err`` with URL credentials and known secrets taken out of its message (a Git remote URL
    can carry a token); the same type name, so the status still says what failed."""
    text = str(err)
    clean = redact(text)
    if clean == text:
        return err
    return type(type(err).__name__, (Exception,), {})(clean)


def _status_of(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(body.get("status") or {})
