"""QuantumPipelines: validated (with their model, when it exists), then run by the engine's
``PipelineReconciler``, the same engine ``qmlops run`` drives.

One worker per pipeline, an asyncio task started at its first watch event, reconciles it when asked:
its first event, a new generation, the ``requestedAt`` annotation, its model's new generation (or the
model appearing), a ``schedule`` trigger's next tick, a look at Git for ``gitChange`` triggers, or a
retry after a failure. A reconcile:

- reads the model by name and reviews the pipeline against it (the webhook's review): an invalid
  pipeline, or one whose model does not exist, is Stalled and starts nothing;
- runs the engine on a pool thread, on that thread's Git work tree (the revision a run starts at is
  its HEAD; ``gitChange`` looks at the files changed since the last run's revision, the registry's
  own folder left out), while holding the model's ledger lock: the model's worker and its pipelines
  write the same ledger and share the model's training folder (its ConfigMap checkpoint covers the
  cells), so one of them at a time;
- trains only with a licence: a training daemon kopf runs while the pipeline's status says Running
  (as a model's while it says Training). Unlicensed, the engine stops where cells would train or
  versions be evaluated (``TrainingDue``, after the run's start is pushed); the worker writes the
  Running status, which spawns the daemon, which wakes the worker. kopf holds the pipeline's
  finalizer while the daemon runs: a pipeline deleted mid-run stops its training (the cell's
  checkpoint is kept for the model) before it goes, and with the jobs executor its cells' and
  evaluations' Jobs, recording what each cell spent (``stop_elsewhere``);
- writes the status (``engine.pipelines.status``: conditions and the last runs), an Event per run
  started, finished, failed step and promotion, and counts runs and cells (cached or trained).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from controller.api import API_VERSION
from controller.api.quantumpipeline import QuantumPipeline, QuantumPipelineStatus, RunPhase
from controller.engine import status as engine_status
from controller.engine import training
from controller.engine.decisions import CHAMPION_KINDS, LedgerKind
from controller.engine.documents import LoadedDocument, Problem
from controller.engine.pipelines.runs import KEPT_IN_STATUS, Run, runs_of
from controller.engine.pipelines.status import pipeline_status
from controller.engine.pipelines.triggers import changed_since
from controller.engine.policy_report import pipeline_backends
from controller.engine.reconcile import Observed, Reconciler, TrainingDue
from controller.engine.reconcile.executor import Held
from controller.engine.reconcile.pipeline import ObservedPipeline, PipelineOutcome, PipelineReconciler
from controller.engine.reconcile.recorder import Decision
from controller.engine.reconcile.state import Due, next_cron_tick
from controller.engine.text import scrub
from controller.engine.validation import validate_documents
from controller.operator import checkpoints, checks, jobs, workers
from controller.operator.kube import merge_diff, resource_path
from controller.operator.loops import LicensedLoop
from controller.operator.runtime import Runtime, process_pool
from controller.operator.settings import REQUESTED_AT
from controller.operator.webhook import authored

log = logging.getLogger(__name__)

_local = threading.local()  # each pool thread's PipelineReconciler, over that thread's work tree
EXIT_POLL_SECONDS = 1.0  # how often a wait for Git to come back looks whether the operator exits
# A Job of the model that ended is looked at this long after the first end not yet looked at: the cells
# (and evaluations) that end together are registered by one reconcile, in one fetch and one push, and
# wake the model once; the next cells start up to this much later.
JOB_SETTLE_SECONDS = 2.0


def review(pipeline: Mapping[str, Any], model: Mapping[str, Any] | None) -> list[Problem]:
    """The pipeline's problems, checked against its model's governance when the model exists."""
    meta = pipeline.get("metadata") or {}
    source = f"QuantumPipeline {meta.get('namespace')}/{meta.get('name')}"
    documents = [LoadedDocument(file=source, index=0, data=authored(pipeline), start=(0, 0))]
    if model is not None:
        documents.append(LoadedDocument(file="model", index=0, data=authored(model), start=(0, 0)))
    report = validate_documents(documents, in_files=False)
    return [p for p in report.problems if p.file == source]


def located(problems: Iterable[Problem]) -> list[str]:
    return [f"{p.path}: {p.message}" if p.path else p.message for p in problems if p.severity == "error"]


def pipeline_reconciler(base: Reconciler, workers: int) -> PipelineReconciler:
    """This pool thread's PipelineReconciler: the services of its model Reconciler, same work tree."""
    found: PipelineReconciler | None = getattr(_local, "reconciler", None)
    if found is None or found.registry is not base.registry:
        found = _local.reconciler = PipelineReconciler(
            base.registry,
            trainer=base.trainer,
            clock=base.clock,
            checkpoint_root=base.checkpoint_root,
            credentials=base.credentials,
            policies=base.policies,
            executor=base.executor,  # a cell trains where the model's trainings do (in-process, or Jobs)
            cell_pool=process_pool("qmlops-cell", workers),  # every pipeline's cells share it
        )
    return found


@dataclass
class PipelineDue(Exception):
    """The run has cells to train or versions to evaluate and the pipeline holds no licence; its runs
    as the ledger has them now (the run's start pushed)."""

    reason: str
    runs: list[Run]


@dataclass
class Looked:
    outcome: PipelineOutcome
    next_in: float | None  # seconds until the next look (a schedule tick, a look at Git)
    evaluated: frozenset[str] = frozenset()  # the evaluation keys pushed as `evaluated` (their Jobs may go)


class PipelineWorker(LicensedLoop):
    """One pipeline's reconcile loop (see the module's docstring)."""

    def __init__(self, owner: Pipelines, namespace: str, name: str, uid: str) -> None:
        super().__init__(owner.runtime, f"qmlops-pipeline:{namespace}/{name}")
        self.owner = owner
        self.namespace, self.name, self.uid = namespace, name, uid
        self.first = True
        self.generation: int | None = None
        self.requested_at: str | None = None
        self.model_changed = False
        self.settle_at: float | None = None  # Jobs of its model ended: looked at then (JOB_SETTLE_SECONDS)
        self.next_at: float | None = None
        self.written: dict[str, Any] | None = None
        self.model_leaving = False  # its model is being deleted: a cell in training stops, nothing registers
        self.held: frozenset[str] = frozenset()  # its run's work that waits (its image), as last announced
        self._restored = False

    @property
    def model_name(self) -> str:
        return str((self.body.get("spec") or {}).get("model") or "")

    def poke(self, model_changed: bool = False) -> None:
        self.model_changed = self.model_changed or model_changed
        self.wake.set()

    def settle(self, delay: float) -> None:
        """A Job ended: look ``delay`` seconds after the first end not looked at yet (the Jobs that end
        meanwhile are looked at by the same reconcile)."""
        if self.settle_at is None:
            self.settle_at = time.monotonic() + delay
        self.wake.set()

    def due(self) -> str | None:
        meta = self.body.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return None
        if self.first:
            return "start"
        if meta.get("generation") != self.generation:
            return "spec changed"
        if (meta.get("annotations") or {}).get(REQUESTED_AT) != self.requested_at:
            return "requested"
        if self.model_changed:
            return "model changed"
        now = time.monotonic()
        if self.settle_at is not None and now >= self.settle_at:
            return "jobs ended"
        if self.retry_at is not None and now >= self.retry_at:
            return "retry"
        if self.next_at is not None and now >= self.next_at:
            return "next look"
        return None

    async def run(self) -> None:
        while not self.closed:
            if self.due() is not None and not self._waiting_for_licence():
                await self.reconcile()
                continue
            self.wake.clear()
            if self.closed or self.due() is None or self._waiting_for_licence():
                moments = [t for t in (self.retry_at, self.next_at, self.settle_at) if t is not None]
                timeout = None
                if moments and not self._waiting_for_licence():
                    timeout = max(0.0, min(moments) - time.monotonic())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout)

    def _stop_for(self, licence: kopf.DaemonStopped | None) -> Callable[[], bool]:
        return lambda: (
            self.closed
            or self.model_leaving
            or self.runtime.closing.is_set()
            or (licence is not None and bool(licence))
        )

    # --- deletion ----------------------------------------------------------------------------------

    async def stop_elsewhere(self) -> bool:
        """The pipeline is deleted (``--executor jobs``) with a run open: what the run has running in
        Jobs stops with it, as an in-process cell does. Its cells' Jobs still running are deleted and
        what each spent (its checkpoint journal) is recorded, ``stopped`` naming the pipeline, run and
        cell, and pushed; its evaluations' Jobs still running are deleted with their ConfigMaps; all
        before the pipeline goes (kopf holds its finalizer while a run is open, until this returns). A
        stopped cell's ConfigMap (its checkpoint) stays with the model, as an in-process cell's
        checkpoint does: a later run of the same cell resumes from it. A Job that has finished is left
        to a later run (which takes its outcome) or to the model. Best effort: what is left goes with
        the model (owner references). Whether it is done (False: Git or the API failed it)."""
        phase = (self.body.get("status") or {}).get("phase")
        pipeline, model_name = self.pipeline(), self.model_name
        if self.runtime.config.executor != "jobs" or phase != RunPhase.RUNNING.value or pipeline is None:
            return True
        ns, client = self.namespace, self.runtime.client
        try:
            model = await self.runtime.read(API_VERSION, "quantummodels", ns, model_name)
            if model is None or (model.get("metadata") or {}).get("deletionTimestamp"):
                return True  # a model that goes stops every Job of its own
            reading = await checks.run(lambda: workers.read(model), checks.RECONCILE_BUDGET_SECONDS)
            observed = reading.observed
            if observed is None:
                return True  # a model the types refuse: its Jobs go with it (owner references)
            cells = {j["metadata"]["name"]: j for j in await jobs.model_trainings(client, ns, model_name, "pipeline")}
            evaluations = {j["metadata"]["name"]: j for j in await jobs.model_evaluations(client, ns, model_name)}

            def stop_training(due: Due) -> dict[str, float] | None:
                return self.runtime.on_loop(self._stop_cell(model_name, due.key, cells))

            def stop_evaluation(key: str) -> None:
                name = jobs.evaluation_job_name(model_name, key)
                if name in evaluations and not jobs.finished(evaluations[name]):
                    self.runtime.on_loop(jobs.delete_training(client, ns, name))

            async with self.runtime.ledger_lock(ns, model_name):
                decisions = await self.runtime.off_loop(
                    lambda: self._stop(pipeline, observed, stop_training, stop_evaluation)
                )
        except Exception as err:
            log.warning("%s/%s: its Jobs not stopped: %s", ns, self.name, type(err).__name__)
            return False
        for decision in decisions:
            self._event(decision.kind, decision.message, decision.version, decision.commit)
        return True

    async def stop_elsewhere_until_done(self, exiting: Callable[[], bool]) -> None:
        """``stop_elsewhere``, tried again after the backoff (``--retry-backoff``) while Git or the API
        is out of reach: the pipeline waits for it (its finalizer), its Jobs run on meanwhile and are
        stopped, and what they spent recorded (cumulative: nothing lost, nothing twice), once the
        outage ends. An operator that exits meanwhile leaves it to the next (``exiting``)."""
        failures = 0
        while not await self.stop_elsewhere():
            deadline = time.monotonic() + self._backoff(failures)
            failures += 1
            while time.monotonic() < deadline:
                if exiting() or self.runtime.closing.is_set():
                    return
                await asyncio.sleep(min(EXIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def _stop(
        self,
        pipeline: QuantumPipeline,
        observed: Observed,
        stop_training: Callable[[Due], dict[str, float] | None],
        stop_evaluation: Callable[[str], None],
    ) -> list[Decision]:
        """In a pool thread: the engine stops the open run's work elsewhere and records what it spent."""
        reconciler = pipeline_reconciler(self.runtime.reconciler(), self.runtime.config.training_workers)
        seen = ObservedPipeline(pipeline, observed, reconciler.registry.git.head() or "")
        return reconciler.stop_elsewhere(seen, stop_training, stop_evaluation)

    async def _stop_cell(self, model: str, key: str, cells: Mapping[str, Mapping[str, Any]]) -> dict[str, float] | None:
        """The cell ``key``'s Job stopped when it runs (a pipeline's: a model's own training of the same
        key is its model's), and what its jobs spent as its ConfigMap's journal says (also when an
        operator before this one stopped it and could not record it); None when nothing of it ran, or
        its Job has finished (its outcome is a later run's to take)."""
        name = jobs.job_name(model, key)
        job = cells.get(name)
        if job is not None and jobs.finished(job):
            return None
        if job is not None:
            await jobs.stop_job(self.runtime.client, self.namespace, name)
            log.info("%s/%s: its cell's Job %s stopped", self.namespace, self.name, name)
        configmap = await self.runtime.read("v1", "configmaps", self.namespace, name)
        if configmap is None:
            return None
        labels = (configmap.get("metadata") or {}).get("labels") or {}
        if (labels.get(jobs.OWNER_LABEL), labels.get(jobs.KEY_LABEL)) != ("pipeline", key) or jobs.ended(configmap):
            return None
        found = jobs.spent_in(configmap)
        return found[1] if found is not None else None

    # --- one reconcile -----------------------------------------------------------------------------

    async def reconcile(self) -> None:
        with self._reconciling():
            await self._reconcile_once(self.body)

    async def _reconcile_once(self, body: kopf.Body) -> None:
        meta = body.get("metadata") or {}
        generation = meta.get("generation")
        requested = (meta.get("annotations") or {}).get(REQUESTED_AT)
        self.model_changed = False
        self.settle_at = None  # the Jobs that ended so far are looked at now
        model_name = self.model_name
        try:
            model = await self.runtime.read(API_VERSION, "quantummodels", self.namespace, model_name)
            if model is not None and (model.get("metadata") or {}).get("deletionTimestamp"):
                model = None  # the model is going: nothing more is trained or registered for it
            # off the event loop: the model's OpenQASM ansatz is parsed here
            problems, reading = await checks.run(
                lambda: (review(body, model), workers.read(model) if model is not None else None),
                checks.RECONCILE_BUDGET_SECONDS,
            )
        except Exception as err:
            await self._failed(err, generation, requested)
            return
        errors = located(problems)
        pipeline = self._read(body)
        if not errors and pipeline is None:
            errors = ["spec: not a valid QuantumPipeline"]
        if not errors and reading is not None and reading.observed is None:
            errors = [f"spec.model: QuantumModel {model_name!r} is not valid: {reading.problem}"]
        if errors or model is None or pipeline is None or reading is None or reading.observed is None:
            stalled = pipeline_status(
                self._before(), problems=errors, model_found=model is not None, **self._at(generation)
            )
            stalled.last_handled_reconcile_at = requested
            try:
                await self._write(stalled)
            except Exception as err:
                await self._failed(err, generation, requested)
                return
            self._handled(generation, requested)
            if model is None and not errors:
                self.owner.wait_for_model(self.namespace, model_name, self)
            result = "invalid" if errors else "ok"
            self.runtime.metrics.reconciles.labels(kind="QuantumPipeline", result=result).inc()
            return
        observed = reading.observed
        ref = checkpoints.ModelRef(self.namespace, model_name, str((model.get("metadata") or {}).get("uid", "")))
        async with self.runtime.ledger_lock(self.namespace, model_name):
            await self._restore(ref, model)
            licence = self.licence
            if licence is not None:
                self.training_due = False
            stop = self._stop_for(licence)
            try:
                looked = await self.runtime.off_loop(
                    lambda: self._look(pipeline, observed, requested, ref, stop, licence is not None)
                )
            except PipelineDue as due:
                await self._running(due, pipeline, generation, requested)
                return
            except training.TrainingStopped as err:
                if not stop():
                    await self._failed(err, generation, requested)
                return
            except Exception as err:  # the operator never dies on input: a failure is status and a retry
                await self._failed(err, generation, requested)
                return
            finally:
                await self._keep_checkpoint(ref)
        self._recovered()
        self._handled(generation, requested)
        self.next_at = time.monotonic() + looked.next_in if looked.next_in is not None else None
        outcome = looked.outcome
        if self.runtime.config.executor == "jobs":
            await self._clear_cell_jobs(model_name, outcome.decisions)
        if any(d.kind in CHAMPION_KINDS or d.kind == LedgerKind.REGISTERED for d in outcome.decisions):
            self.owner.model_moved(self.namespace, model_name)
        before = self._before()
        new = pipeline_status(
            before,
            runs=outcome.runs,
            steps=[s.name for s in pipeline.spec.steps],
            waiting=scrub(outcome.message),
            held=outcome.held,
            **self._at(generation),
        )
        new.last_handled_reconcile_at = requested
        try:
            await self._write(new)
        except Exception as err:  # the retry announces and counts what this status would have shown
            await self._failed(err, generation, requested)
            return
        self._announce(before, outcome.runs)
        self._announce_held(outcome.held)
        for decision in outcome.decisions:
            if decision.kind in CHAMPION_KINDS:
                self._event(decision.kind, decision.message, decision.version, decision.commit)
        self._count(before, outcome.runs)
        self.runtime.metrics.reconciles.labels(kind="QuantumPipeline", result="ok").inc()
        if looked.evaluated:
            await self._clear_evaluations(model_name, looked.evaluated)

    async def _clear_evaluations(self, model: str, pushed: frozenset[str]) -> None:
        """The evaluation Jobs whose results are pushed, with their ConfigMaps, deleted."""
        try:
            await jobs.clear_evaluations(self.runtime.client, self.namespace, model, pushed)
        except Exception as err:  # they go with the model at the latest
            log.warning("%s/%s: evaluation Jobs not cleared: %s", self.namespace, self.name, type(err).__name__)

    async def _clear_cell_jobs(self, model: str, decisions: Sequence[Decision]) -> None:
        """This reconcile is pushed: the cells' Jobs it found Complete (their versions registered) go with
        their ConfigMaps, and those it found Failed once their failure is recorded (the train step
        failed, saying why); a failed one stays meanwhile, for ``kubectl logs``."""
        recorded = any(d.kind == LedgerKind.STEP_FAILED for d in decisions)
        for name in self.runtime.ended_cells.take(self.namespace, model, failed_too=recorded):
            try:
                await jobs.delete_training(self.runtime.client, self.namespace, name)
            except Exception as err:  # they go with the model at the latest
                log.warning("%s/%s: Job %s not deleted: %s", self.namespace, self.name, name, type(err).__name__)

    def _look(
        self,
        pipeline: QuantumPipeline,
        observed: Observed,
        requested: str | None,
        ref: checkpoints.ModelRef,
        stop: Callable[[], bool],
        may_train: bool,
    ) -> Looked:
        """In a pool thread: the engine's reconcile of the pipeline on this thread's work tree."""
        base = self.runtime.reconciler()
        reconciler = pipeline_reconciler(base, self.runtime.config.training_workers)
        registry = reconciler.registry
        registry.sync()
        seen = ObservedPipeline(
            pipeline,
            observed,
            registry.git.head() or "",
            requested,
            changed_since(registry.git, f"{registry.root}/"),
        )
        try:
            outcome = reconciler.reconcile(
                seen, on_progress=lambda _: self._progress(ref), should_stop=stop, may_train=may_train, synced=True
            )
        except TrainingDue as due:
            registry.publish()  # the run's start, recorded before the work it cannot do unlicensed
            runs = runs_of(registry.ledger(ref.namespace, ref.name), pipeline.metadata.name)
            raise PipelineDue(str(due), runs) from due
        evaluated: frozenset[str] = frozenset()
        if self.runtime.config.executor == "jobs" and any(d.kind == LedgerKind.EVALUATED for d in outcome.decisions):
            ledger = registry.ledger(ref.namespace, ref.name)
            evaluated = jobs.pushed_evaluations(ledger.of_kind(LedgerKind.EVALUATED))
        return Looked(outcome, self._next_in(pipeline, outcome.runs, reconciler.now()), evaluated)

    def _next_in(self, pipeline: QuantumPipeline, runs: list[Run], now: datetime) -> float | None:
        """Seconds to the next schedule tick, or to the next look at Git: for a gitChange trigger, or
        for a run left open (its promotion waits for approvals, which arrive as commits)."""
        if pipeline.spec.suspend:
            return None
        delays = [
            max(1.0, (next_cron_tick(t.schedule, now) - now).total_seconds())
            for t in pipeline.spec.triggers
            if t.schedule
        ]
        if any(t.git_change for t in pipeline.spec.triggers) or (runs and runs[-1].open):
            delays.append(self.runtime.config.approval_poll)
        return min(delays) if delays else None

    def _progress(self, ref: checkpoints.ModelRef) -> None:
        """In a pool thread, after each iteration of a cell: count it, keep the model's checkpoints."""
        self.runtime.metrics.iterations.inc()
        try:
            self.runtime.on_loop(self._keep_checkpoint(ref))
        except Exception as err:
            log.debug("%s/%s: checkpoint not kept: %s", self.namespace, self.name, type(err).__name__)

    async def _keep_checkpoint(self, ref: checkpoints.ModelRef) -> None:
        """The model's training folder (its cells' workspaces with it) copied to its ConfigMap."""
        folder = self.runtime.checkpoint_dir(ref.namespace, ref.name)
        try:
            await self.runtime.checkpoints.save(ref, folder)
        except checkpoints.CheckpointTooLarge as err:
            log.warning("%s/%s: %s; kept on this pod only", self.namespace, self.name, err)
        except Exception as err:
            log.warning("%s/%s: checkpoint not kept: %s", self.namespace, self.name, type(err).__name__)

    async def _restore(self, ref: checkpoints.ModelRef, model: Mapping[str, Any]) -> None:
        """Once: the model's training folder a previous pod kept in its ConfigMap, unless this pod has
        one (the model's worker may have restored it first)."""
        if self._restored:
            return
        self._restored = True
        folder = self.runtime.checkpoint_dir(ref.namespace, ref.name)
        if folder.is_dir() and any(folder.iterdir()):
            return
        try:
            await self.runtime.checkpoints.restore(ref, folder, checkpoints.recorded_digest(model))
        except Exception as err:  # the cells then train from scratch
            log.warning("%s/%s: checkpoint not restored: %s", self.namespace, self.name, type(err).__name__)

    # --- status, events, metrics -------------------------------------------------------------------

    def pipeline(self) -> QuantumPipeline | None:
        """The pipeline as last seen, when the types accept it."""
        return self._read(self.body) if self.body else None

    def _read(self, body: Mapping[str, Any]) -> QuantumPipeline | None:
        try:
            return QuantumPipeline.model_validate(authored(body))
        except ValidationError:
            return None

    def _before(self) -> QuantumPipelineStatus:
        current = self.written if self.written is not None else dict(self.body.get("status") or {})
        try:
            return QuantumPipelineStatus.model_validate(current)
        except ValidationError:
            return QuantumPipelineStatus()

    def _at(self, generation: int | None) -> dict[str, Any]:
        return {"generation": generation, "now": self.runtime.clock()}

    async def _running(
        self, due: PipelineDue, pipeline: QuantumPipeline, generation: int | None, requested: str | None
    ) -> None:
        """Say the run is Running: the phase that spawns the training daemon."""
        new = pipeline_status(
            self._before(),
            runs=due.runs,
            steps=[s.name for s in pipeline.spec.steps],
            waiting=scrub(due.reason),
            **self._at(generation),
        )
        new.last_handled_reconcile_at = requested
        if new.phase != RunPhase.RUNNING.value:  # the ledger has no open run: nothing to license
            await self._failed(RuntimeError(due.reason), generation, requested)
            return
        before = self._before()
        try:
            await self._write(new)
        except Exception as err:
            await self._failed(err, generation, requested)
            return
        self._announce(before, due.runs)
        self.training_due = True

    async def _write(self, new: QuantumPipelineStatus) -> None:
        wire = new.to_wire()
        current = self.written if self.written is not None else dict(self.body.get("status") or {})
        patch = merge_diff(current, wire)
        if patch:
            path = resource_path(API_VERSION, "quantumpipelines", self.namespace, self.name, "status")
            await self.runtime.client.merge_patch(path, {"status": patch})
        self.written = wire

    def _event(self, kind: LedgerKind, message: str, version: int | None = None, commit: str | None = None) -> None:
        where = f" (commit {commit[:12]})" if commit else ""
        at = f"version {version}: " if version is not None else ""
        text = scrub(f"{at}{message}{where}")
        kopf.event(self.body, type="Warning" if kind.warns else "Normal", reason=kind.event_reason, message=text)

    def _announce(self, before: QuantumPipelineStatus, runs: list[Run]) -> None:
        """An Event per run started, step failed and run finished since the status before (read from the
        runs, so that a run started by a reconcile that stopped for its licence is announced too)."""
        shown = {r.id: r for r in before.runs}
        for run in runs[-KEPT_IN_STATUS:]:
            earlier = shown.get(run.id)
            if earlier is None:
                self._event(LedgerKind.RUN_STARTED, f"run {run.id} started: {run.reason}")
            failed_before = {s.name for s in (earlier.steps if earlier else []) if s.phase is RunPhase.FAILED}
            for name, record in run.steps.items():
                if record.phase is RunPhase.FAILED and name not in failed_before:
                    self._event(LedgerKind.STEP_FAILED, record.message)
            if not run.open and (earlier is None or earlier.finished is None):
                self._event(LedgerKind.RUN_FINISHED, f"run {run.id} {run.phase.value.lower()}")

    def _announce_held(self, held: Sequence[Held]) -> None:
        """A Warning Event per piece of the run's work that began to wait (its Job's image cannot be
        pulled), its reason the wait's (``WaitReason``); what no longer waits is forgotten, so that it is
        announced again if it waits again."""
        for piece in held:
            if piece.what not in self.held:
                message = scrub(f"{piece.what}: {piece.message}")[:1024]
                kopf.event(self.body, type="Warning", reason=piece.reason.value, message=message)
        self.held = frozenset(piece.what for piece in held)

    def _count(self, before: QuantumPipelineStatus, runs: list[Run]) -> None:
        """Runs finished and train steps concluded since the status before: by result, by cell source."""
        metrics = self.runtime.metrics
        shown = {r.id: r for r in before.runs}
        for run in runs:
            earlier = shown.get(run.id)
            if not run.open and (earlier is None or earlier.phase not in (RunPhase.SUCCEEDED, RunPhase.FAILED)):
                metrics.pipeline_runs.labels(result=run.phase.value.lower()).inc()
            done_before = {s.name for s in (earlier.steps if earlier else []) if s.phase is RunPhase.SUCCEEDED}
            for name, record in run.steps.items():
                if name in done_before or record.phase is not RunPhase.SUCCEEDED or "cached" not in record.outputs:
                    continue
                metrics.pipeline_cells.labels(source="cache").inc(len(record.outputs.get("cached") or {}))
                metrics.pipeline_cells.labels(source="trained").inc(len(record.outputs.get("trained") or []))

    def _handled(self, generation: int | None, requested: str | None) -> None:
        self.first = False
        self.generation = generation
        self.requested_at = requested

    async def _failed(self, err: Exception, generation: int | None, requested: str | None) -> None:
        delay = self._back_off()
        self._handled(generation, requested)
        reason = type(err).__name__
        message = engine_status.describe_failure(workers.redacted(err))
        log.warning(
            "%s/%s: pipeline reconcile failed (%s), retrying in %.0fs: %s",
            self.namespace,
            self.name,
            reason,
            delay,
            message,
        )
        self.last_failure = workers.failure_event(self.body, reason, message, self.last_failure)
        self.runtime.metrics.failures.labels(reason=reason).inc()
        self.runtime.metrics.reconciles.labels(kind="QuantumPipeline", result="failed").inc()
        failed = pipeline_status(self._before(), error=f"{reason}: {message}", **self._at(generation))
        failed.last_handled_reconcile_at = requested
        try:
            await self._write(failed)
        except Exception as write_err:
            log.warning("%s/%s: status not written: %s", self.namespace, self.name, type(write_err).__name__)


class Pipelines:
    """The pipelines' workers, and which of them wait for their model."""

    def __init__(self, runtime: Runtime, clock: Callable[[], datetime] | None = None) -> None:
        self.runtime = runtime
        self.clock = clock or (lambda: datetime.now(UTC))
        self.workers: dict[str, PipelineWorker] = {}
        self.waiting: dict[tuple[str, str], dict[str, PipelineWorker]] = {}  # (namespace, model) -> pipelines
        self.model_generations: dict[tuple[str, str], Any] = {}
        self.on_model_moved: Callable[[str, str], None] | None = None  # the model's worker looks again
        self.job_settle = JOB_SETTLE_SECONDS
        # uid -> the stop of a deleted pipeline's Jobs: one per pipeline, however many events and its
        # daemon ask for it (two would each record what the pod spent after the other read its journal)
        self.stopping: dict[str, asyncio.Task[None]] = {}

    def backends_of(self, namespace: str, model: str) -> tuple[str, ...]:
        """The backends the evaluate steps of the model's pipelines score on (its compliance packs ask
        for an accuracy measured on each); a pipeline the types refuse adds none."""
        found: list[QuantumPipeline] = []
        for worker in list(self.workers.values()):
            if worker.namespace == namespace and worker.model_name == model:
                pipeline = worker.pipeline()
                if pipeline is not None:
                    found.append(pipeline)
        return pipeline_backends(found, namespace, model)

    def worker(self, uid: str, namespace: str, name: str) -> PipelineWorker:
        found = self.workers.get(uid)
        if found is None:
            found = self.workers[uid] = PipelineWorker(self, namespace, name, uid)
        return found

    async def event(self, *, body: kopf.Body, uid: str, type: str | None, **_: Any) -> None:
        meta = body.get("metadata") or {}
        if type == "DELETED":
            await self.gone(uid)
            if uid in self.stopping and self.stopping[uid].done():
                del self.stopping[uid]
            return
        worker = self.worker(uid, meta.get("namespace", ""), meta.get("name", ""))
        worker.seen(body)
        if meta.get("deletionTimestamp") and worker.licence is None:
            # nothing trains here; its Jobs (an operator before this one stopped mid-way) stop first
            await self.stop_once(uid, worker, lambda: False)
            await self.gone(uid)

    async def stop_once(self, uid: str, worker: PipelineWorker, exiting: Callable[[], bool]) -> None:
        """The deleted pipeline's Jobs stopped and what they spent recorded (``stop_elsewhere_until_done``),
        once: a second ask while it runs, or after it, waits for the first."""
        task = self.stopping.get(uid)
        if task is None:
            task = self.stopping[uid] = asyncio.create_task(worker.stop_elsewhere_until_done(exiting))
        await asyncio.shield(task)

    async def training(self, *, uid: str, body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        meta = body.get("metadata") or {}
        worker = self.worker(uid, meta.get("namespace", ""), meta.get("name", ""))
        if not worker.body:
            worker.seen(body)
        await worker.licensed(stopped)
        if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
            # before the daemon returns: kopf holds the finalizer until then
            await self.stop_once(uid, worker, lambda: operator_exiting(stopped))
            await self.gone(uid)

    async def gone(self, uid: str) -> None:
        worker = self.workers.pop(uid, None)
        if worker is not None:
            for waiting in self.waiting.values():
                waiting.pop(uid, None)
            await worker.close()

    def wait_for_model(self, namespace: str, model: str, worker: PipelineWorker) -> None:
        self.waiting.setdefault((namespace, model), {})[worker.uid] = worker

    async def model_seen(self, namespace: str, model: str, generation: Any = None, *, deleting: bool = False) -> None:
        """A watch event of a QuantumModel: its pipelines look again when it appeared or its spec changed;
        while it is being deleted their cells in training stop (a version of a model that is going is
        never registered)."""
        key = (namespace, model)
        if deleting:
            self._leaving(key, True)
            return
        self._leaving(key, False)
        for worker in self.waiting.pop(key, {}).values():
            worker.poke(model_changed=True)
        if generation is None or self.model_generations.get(key) == generation:
            return
        known = key in self.model_generations
        self.model_generations[key] = generation
        if known:
            for worker in list(self.workers.values()):
                if (worker.namespace, worker.model_name) == key:
                    worker.poke(model_changed=True)

    def model_gone(self, namespace: str, model: str) -> None:
        self.model_generations.pop((namespace, model), None)
        self._leaving((namespace, model), True)
        for worker in list(self.workers.values()):
            if (worker.namespace, worker.model_name) == (namespace, model):
                worker.poke(model_changed=True)

    def _leaving(self, key: tuple[str, str], leaving: bool) -> None:
        for worker in list(self.workers.values()):
            if (worker.namespace, worker.model_name) == key and worker.model_leaving != leaving:
                worker.model_leaving = leaving
                worker.poke(model_changed=True)

    def job_ended(self, namespace: str, model: str) -> None:
        """A training or evaluation Job of the model ended (the jobs executor): its pipelines look again
        (a cell's artifact is theirs to register), ``job_settle`` seconds after the first such end, so
        that the cells that end together are registered by one reconcile."""
        for worker in list(self.workers.values()):
            if (worker.namespace, worker.model_name) == (namespace, model):
                worker.settle(self.job_settle)

    def job_recovered(self, namespace: str, model: str) -> None:
        """A Job of the model whose pod waited (its image) runs at last: its pipelines that said some of
        their work waits look again (and say it no longer does)."""
        for worker in list(self.workers.values()):
            if (worker.namespace, worker.model_name) == (namespace, model) and worker.held:
                worker.settle(self.job_settle)

    def model_moved(self, namespace: str, model: str) -> None:
        """A pipeline registered or promoted versions of the model: its status follows."""
        if self.on_model_moved is not None:
            self.on_model_moved(namespace, model)

    async def cleanup(self) -> None:
        await asyncio.gather(*(worker.close() for worker in list(self.workers.values())))


def running(status: kopf.Status, spec: kopf.Spec, **_: Any) -> bool:
    """The training daemon's filter: a run is under way, and the pipeline is not suspended."""
    return status.get("phase") == RunPhase.RUNNING.value and not spec.get("suspend")


def operator_exiting(stopped: kopf.DaemonStopped) -> bool:
    """Whether kopf stops the daemon because the operator exits or pauses (not only for a deletion)."""
    leaving = kopf.DaemonStoppingReason.OPERATOR_EXITING | kopf.DaemonStoppingReason.OPERATOR_PAUSING
    return stopped.reason is not None and bool(stopped.reason & leaving)
