"""``PipelineReconciler``: one QuantumPipeline's runs, on its model's registry in Git.

A reconcile of a pipeline runs these steps (the same framework as a model's: ``intents.run_steps``
with the Git recorder, or with the dry run for ``plan``):

1. ``check``: a suspended pipeline, a missing model or a model its governance blocks starts nothing;
2. ``start_run``: the open run goes on; otherwise a run starts when a trigger is due (``triggers.py``)
   and is written as ``run-started``;
3. for each step of the pipeline, in dependency order, a *work* step and a *conclude* step:
   ``train`` trains the cells that neither this run nor the cache has (``TrainCells``) and concludes
   with ``step-succeeded`` (cells, cached, trained) or ``step-failed``; ``evaluate`` scores every
   candidate on every backend (``EvaluateVersions``, each result an ``evaluated`` entry); ``select``
   writes ``selected``; ``promote`` sends the selected version through the model's own gates,
   approvals and pin;
4. ``finish_run``: ``run-finished`` once every step succeeded, or one failed.

Everything a run did is in the model's ledger, so a controller killed at any point resumes the run
where the ledger says it stands: cells already registered in the run are not trained again, a cell
in training resumes from its checkpoint (its workspace is keyed by the cell's effective input), and a
version is registered once (by artifact digest, and by run and cell).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from controller.api.common import duration_seconds
from controller.api.paths import topological_order
from controller.api.quantummodel import QuantumModelSpec
from controller.api.quantumpipeline import QuantumPipeline, RunPhase, Step
from controller.engine import promotion
from controller.engine import status as model_status
from controller.engine.decisions import LedgerKind, PlanAction
from controller.engine.errors import RetryableError, WaitingError, stalls
from controller.engine.pipelines import selection
from controller.engine.pipelines.cells import Cell, cells_of
from controller.engine.pipelines.runs import Run, runs_of
from controller.engine.pipelines.triggers import Start, due_run, waiting_for_monitoring
from controller.engine.reconcile import actions
from controller.engine.reconcile.executor import EvaluationRequest, Held, Running, evaluation_key
from controller.engine.reconcile.intents import (
    Applied,
    EvaluateVersions,
    Intent,
    RecordDecision,
    StepContext,
    StepResult,
    TrainCells,
    Verdict,
    run_steps,
)
from controller.engine.reconcile.recorder import Decision, DryRun, GitRecorder, decide_and_push
from controller.engine.reconcile.services import Services
from controller.engine.reconcile.state import Due, Observed, training
from controller.engine.registry.canonical import digest_of
from controller.engine.registry.ledger import Entry
from controller.engine.registry.versions import Version
from controller.engine.status import describe_failure

W = TypeVar("W")  # a piece of work an executor runs elsewhere (a cell, an evaluation)
R = TypeVar("R")  # its result (an artifact's JSON, an evaluation's)
PIPELINE_OWNER = "pipeline"  # the owner a cell's workspace records (the model's sweep leaves it alone)
HELD = "held"  # notes: the work running elsewhere that waits (Held), in the order it was asked about
PipelineStep = Callable[["PipelineContext"], StepResult]


@dataclass(frozen=True)
class ObservedPipeline:
    """What a shell observed about one QuantumPipeline: the pipeline, its model as observed (None
    when the model does not exist), the revision of the repository it is seen at (a run starts at
    it), a pending run request, and the files changed since a revision (for ``gitChange``)."""

    pipeline: QuantumPipeline
    model: Observed | None
    revision: str = ""
    requested_at: str | None = None
    changed_paths: Callable[[str], Iterable[str]] | None = None

    @property
    def key(self) -> str:
        return f"{self.pipeline.metadata.namespace}/{self.pipeline.metadata.name}"


@dataclass(kw_only=True)
class PipelineContext(StepContext):
    """A step's view: the model's state (the shared actions read it) and the pipeline with its runs."""

    seen: ObservedPipeline

    @property
    def pipeline(self) -> QuantumPipeline:
        return self.seen.pipeline

    @property
    def name(self) -> str:
        return self.pipeline.metadata.name

    def runs(self) -> list[Run]:
        return runs_of(self.state.ledger, self.name)

    def open_run(self) -> Run | None:
        runs = self.runs()
        return runs[-1] if runs and runs[-1].open else None

    def about(self, run: Run, step: str | None = None, cell: str | None = None) -> dict[str, Any]:
        """``data.pipeline`` of an entry of ``run``."""
        about: dict[str, Any] = {"name": self.name, "run": run.id}
        if step is not None:
            about["step"] = step
        if cell is not None:
            about["cell"] = cell
        return about

    def tagged(self, run: Run, step: str, intent: RecordDecision) -> RecordDecision:
        """A model decision (gates, promotion) the run's step made, marked as such in data and trailers."""
        about = self.about(run, step)
        return dataclasses.replace(
            intent, data={**intent.data, "pipeline": about}, trailers=actions.run_trailers(self.state, about)
        )

    def decision(self, run: Run, kind: LedgerKind, version: int | None, message: str, **data: Any) -> RecordDecision:
        step = data.pop("step", None)
        about = self.about(run, step)
        return RecordDecision(
            kind,
            version,
            message,
            {"pipeline": about, **data},
            trailers=actions.run_trailers(self.state, about),
        )


@dataclass(frozen=True)
class CellTraining:
    """One cell to train: its variant of the model's spec, the training it is due as, and what its
    version will record of the run."""

    cell: Cell
    spec: QuantumModelSpec
    due: Due
    about: dict[str, Any]


@dataclass
class CellPlan:
    """Where a train step's cells stand now."""

    done: dict[str, int] = field(default_factory=dict)  # cell id -> version registered in this run
    cached: dict[str, tuple[int, str]] = field(default_factory=dict)  # cell id -> (version, why)
    pending: list[CellTraining] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # cell id -> why it cannot train
    misses: dict[str, str] = field(default_factory=dict)  # cell id -> why the cache had nothing
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def versions(self) -> dict[str, int]:
        return {**{c: v for c, (v, _) in self.cached.items()}, **self.done}


# --- the steps --------------------------------------------------------------------------------------------


def check(ctx: PipelineContext) -> StepResult:
    pipeline = ctx.pipeline
    if pipeline.spec.suspend:
        return StepResult(verdict=Verdict(PlanAction.SUSPEND, "spec.suspend is true: no run starts"), stop=True)
    if ctx.seen.model is None:
        why = f"waiting for QuantumModel {pipeline.spec.model!r} to exist in namespace {pipeline.metadata.namespace!r}"
        return StepResult(verdict=Verdict(PlanAction.WAIT, why), stop=True)
    governance = ctx.services.governance(ctx.state.spec)
    if governance.blockers:
        why = f"its model is blocked: {governance.message}"
        return StepResult(verdict=Verdict(PlanAction.BLOCK, why), stop=True)
    return StepResult()


def start_run(ctx: PipelineContext) -> StepResult:
    if ctx.open_run() is not None:
        return StepResult()
    runs = ctx.runs()
    last = runs[-1].last_run() if runs else None
    start = due_run(
        ctx.pipeline.spec,
        last,
        revision=ctx.seen.revision,
        now=ctx.state.now,
        requested_at=ctx.seen.requested_at,
        changed_paths=ctx.seen.changed_paths,
    )
    if start is None and last is not None:
        start = _drift_start(ctx, last.started)
    if start is None:
        waiting = waiting_for_monitoring(ctx.pipeline.spec)
        more = (
            f"; {len(waiting)} drift trigger{'s' if len(waiting) != 1 else ''} wait for monitoring" if waiting else ""
        )
        failed = f"; the last run ({runs[-1].id}) failed" if runs and runs[-1].phase is RunPhase.FAILED else ""
        return StepResult(verdict=Verdict(PlanAction.NOTHING, f"no trigger is due{failed}{more}"), stop=True)
    ctx.notes["start"] = f"run {start.id} starts: {start.reason}"
    return StepResult((_run_started(ctx, start),), Verdict(PlanAction.RUN, ctx.notes["start"]))


def _drift_start(ctx: PipelineContext, since: Any) -> Start | None:
    """A run a drift trigger starts: the model's drift-detected entries since the last run started."""
    from controller.engine.pipelines.triggers import fired_by_drift

    drifts = [
        (e.digest, ctx.seen.revision, dict(e.data))
        for e in ctx.state.ledger.of_kind(LedgerKind.DRIFT_DETECTED)
        if e.time > since
    ]
    return fired_by_drift(ctx.pipeline.spec, drifts) if drifts else None


def _run_started(ctx: PipelineContext, start: Start) -> RecordDecision:
    from controller.engine.pipelines.triggers import pipeline_digest

    about = {"name": ctx.name, "run": start.id}
    data = {
        "pipeline": about,
        "cause": start.cause.value,
        "reason": start.reason,
        "revision": start.revision,
        "specDigest": pipeline_digest(ctx.pipeline.spec),
        "request": ctx.seen.requested_at if start.cause.value == "request" else None,
    }
    message = f"pipeline {ctx.name}: run {start.id} started: {start.reason}"
    return RecordDecision(LedgerKind.RUN_STARTED, None, message, data, trailers=actions.run_trailers(ctx.state, about))


def _ready(ctx: PipelineContext, step: Step) -> Run | None:
    """The open run when ``step`` is next in it: not recorded yet, every dependency succeeded."""
    run = ctx.open_run()
    if run is None or run.step(step.name) is not None:
        return None
    if not all(run.succeeded(d) for d in step.depends_on):
        return None
    return run


def _upstream(ctx: PipelineContext, step: Step, action: str) -> Step | None:
    """The nearest step ``step`` depends on (directly or not) whose action is ``action``."""
    by_name = {s.name: s for s in ctx.pipeline.spec.steps}
    queue, seen = list(step.depends_on), set()
    while queue:
        name = queue.pop(0)
        if name in seen or name not in by_name:
            continue
        seen.add(name)
        if by_name[name].action == action:
            return by_name[name]
        queue.extend(by_name[name].depends_on)
    return None


# --- train ------------------------------------------------------------------------------------------------


def plan_cells(ctx: PipelineContext, run: Run, step: Step) -> CellPlan:
    """Each cell of ``step``: registered in this run already, found in the cache (a version trained
    from the same effective input: spec, dataset, backend (in the spec) and package versions), refused
    (its variant is not a valid spec), or pending."""
    assert step.train is not None
    state, services = ctx.state, ctx.services
    plan = CellPlan()
    model_wire = state.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    wire_key = json.dumps(model_wire, sort_keys=True)
    in_run = {
        (v.pipeline or {}).get("cell"): v.number
        for v in state.versions
        if (v.pipeline or {}).get("run") == run.id and (v.pipeline or {}).get("step") == step.name
    }
    packages = training().package_versions()
    for cell in cells_of(step.train):
        plan.labels[cell.id] = cell.label
        if cell.id in in_run:
            plan.done[cell.id] = in_run[cell.id]
            continue
        try:  # remembered by the wire spec and the cell's values: a sweep's reconcile asks for every cell
            key = json.dumps([wire_key, cell.as_dict()], sort_keys=True)
            variant, spec_digest = services.variant(model_wire, key, cell.apply)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "spec"
            plan.refused[cell.id] = f"its spec is not valid: {where}: {first['msg']}"
            continue
        try:
            dataset_digest = services.dataset_digest(variant)
        except Exception as err:
            plan.refused[cell.id] = f"its training data cannot be prepared: {describe_failure(err)}"
            continue
        hit, miss = _cached(state.versions, spec_digest, dataset_digest, packages)
        if hit is not None:
            plan.cached[cell.id] = (hit.number, f"version {hit.number} was trained from the same input")
            continue
        plan.misses[cell.id] = miss
        key = digest_of([f"{spec_digest}|{dataset_digest}", ""])[7:23]
        last = state.ledger.last
        due = Due(
            f"pipeline {ctx.name} run {run.id} step {step.name} cell {cell.label}",
            key,
            spec_digest,
            dataset_digest,
            last.seq if last else 0,
        )
        plan.pending.append(CellTraining(cell, variant, due, ctx.about(run, step.name, cell.id)))
    return plan


def _cached(
    versions: Sequence[Version], spec_digest: str, dataset_digest: str, packages: dict[str, str]
) -> tuple[Version | None, str]:
    same_input = [v for v in versions if (v.spec_digest, v.dataset_digest) == (spec_digest, dataset_digest)]
    if not same_input:
        return None, "no version was trained from this input"
    for version in reversed(same_input):
        recorded = version.lineage.get("packages") or {}
        if all(recorded.get(name) == installed for name, installed in packages.items() if name != "qmlops"):
            return version, ""
    newest = same_input[-1]
    changed = sorted(
        f"{name} {(newest.lineage.get('packages') or {}).get(name)} -> {installed}"
        for name, installed in packages.items()
        if name != "qmlops" and (newest.lineage.get("packages") or {}).get(name) != installed
    )
    return None, f"version {newest.number} was trained with other packages ({', '.join(changed[:3])})"


def train_cells(step: Step) -> PipelineStep:
    def work(ctx: PipelineContext) -> StepResult:
        run = _ready(ctx, step)
        if run is None or step.train is None:
            return StepResult()
        plan = plan_cells(ctx, run, step)
        ctx.notes[f"cells:{step.name}"] = plan
        if not plan.pending or (plan.refused and ctx.pipeline.spec.fail_fast):
            return StepResult()
        cached = f" ({len(plan.cached)} cached)" if plan.cached else ""
        why = f"run {run.id}: step {step.name}: train {len(plan.pending)} of {len(plan.labels)} cells{cached}"
        intent = TrainCells(
            step.name,
            tuple(plan.pending),
            step.train.parallelism,
            step.retries,
            duration_seconds(step.retry_backoff),
            ctx.pipeline.spec.fail_fast,
        )
        return StepResult((intent,), Verdict(PlanAction.TRAIN, why))

    return work


def conclude_train(step: Step) -> PipelineStep:
    def conclude(ctx: PipelineContext) -> StepResult:
        run = _ready(ctx, step)
        if run is None or step.train is None:
            return StepResult()
        plan = plan_cells(ctx, run, step)
        failures = {**plan.refused, **ctx.notes.get(f"cell-failures:{step.name}", {})}
        if failures and ctx.notes.get(f"cells-open:{step.name}"):
            return StepResult()  # cells still train elsewhere: they finish (and are registered) first
        if failures:
            shown = "; ".join(f"cell {plan.labels.get(c, c)}: {why}" for c, why in sorted(failures.items())[:5])
            more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
            message = f"pipeline {ctx.name} run {run.id}: step {step.name} failed: {shown}{more}"
            return StepResult((ctx.decision(run, LedgerKind.STEP_FAILED, None, message, step=step.name),))
        if plan.pending:
            return StepResult()  # not trained (the dry run stops before): nothing to conclude yet
        versions = plan.versions
        outputs = {
            "cells": {c: versions[c] for c in plan.labels},
            "labels": plan.labels,
            "cached": {c: why for c, (_, why) in plan.cached.items()},
            "trained": sorted(plan.done),
            "misses": plan.misses,
        }
        message = (
            f"pipeline {ctx.name} run {run.id}: step {step.name}: {len(versions)} cells, "
            f"{len(plan.cached)} from the cache, {len(plan.done)} trained in this run"
        )
        decision = ctx.decision(run, LedgerKind.STEP_SUCCEEDED, None, message, step=step.name, outputs=outputs)
        return StepResult((decision,))

    return conclude


def carry_out_cells(
    ctx: StepContext,
    intent: TrainCells,
    record: Callable[[StepContext, RecordDecision], None],
    *,
    on_progress: Callable[[Any], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Intent]:
    """Train the cells ``parallelism`` at a time; register each finished one in the order they end
    (Git is written by this thread only). A failed cell is retried ``retries`` times with backoff
    when retrying can help; with ``fail_fast`` the cells not started yet are then left."""
    failures: dict[str, str] = ctx.notes.setdefault(f"cell-failures:{intent.step}", {})
    if ctx.services.executor.elsewhere:
        return _cells_elsewhere(ctx, intent, record, failures, on_progress=on_progress, should_stop=should_stop)
    stopped: list[BaseException] = []

    def one(cell: CellTraining) -> bytes:
        for attempt in range(intent.retries + 1):
            try:
                raw = _train_cell(ctx, cell, on_progress=on_progress, should_stop=should_stop)
                assert isinstance(raw, bytes), "an executor that trains here returns the artifact"
                return raw
            except Exception as err:
                if isinstance(err, training().TrainingStopped) or stalls(err) or attempt == intent.retries:
                    raise
                sleep(intent.backoff * 2**attempt)
        raise AssertionError("unreachable")

    shared: concurrent.futures.Executor | None = getattr(ctx.services, "cell_pool", None)
    own = None
    if shared is None:
        own = concurrent.futures.ThreadPoolExecutor(max_workers=intent.parallelism, thread_name_prefix="qmlops-cell")
    pool = shared or own
    assert pool is not None
    waiting = list(intent.cells)  # submitted ``parallelism`` at a time, so a shared pool keeps the bound
    running: dict[concurrent.futures.Future[bytes], CellTraining] = {}
    try:
        while waiting or running:
            while waiting and len(running) < intent.parallelism:
                cell = waiting.pop(0)
                running[pool.submit(one, cell)] = cell
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                cell = running.pop(future)
                try:
                    raw = future.result()
                except Exception as err:
                    if isinstance(err, training().TrainingStopped):
                        stopped.append(err)
                        cell_stopped(ctx, cell, err, record)
                    else:
                        failures[cell.cell.id] = describe_failure(err)
                        cell_failed(ctx, cell, err, record)
                    if intent.fail_fast or stopped:
                        waiting.clear()  # not started yet: left for the next run (or never, failed fast)
                    continue
                cell_trained(ctx, cell, raw, record)
    finally:
        if own is not None:
            own.shutdown(wait=True)
        elif running:  # left by an error here: the shared pool's cells end before the step does
            concurrent.futures.wait(running)
    if stopped:
        raise stopped[0]
    return []


def _train_cell(
    ctx: StepContext,
    cell: CellTraining,
    *,
    on_progress: Callable[[Any], None] | None,
    should_stop: Callable[[], bool] | None,
    start: bool = True,
) -> bytes | Running | None:
    """``cell``'s training, its variant of the model's spec in its own workspace, owned by the pipeline
    (as :func:`actions.train_in_workspace` says: the artifact, :class:`Running` while it runs
    elsewhere, or None when ``start`` is false and it has not started)."""
    state = dataclasses.replace(ctx.state, spec=cell.spec)
    return actions.train_in_workspace(
        ctx.services,
        state,
        cell.due,
        owner=PIPELINE_OWNER,
        on_progress=on_progress,
        should_stop=should_stop,
        start=start,
    )


def cell_trained(
    ctx: StepContext, cell: CellTraining, raw: bytes, record: Callable[[StepContext, RecordDecision], None]
) -> None:
    """A trained cell's artifact recorded as ``actions.registration`` decides for its variant of the
    spec (a version naming the pipeline, run and cell; nothing when its digest is registered already)."""
    cell_ctx = dataclasses.replace(ctx, state=dataclasses.replace(ctx.state, spec=cell.spec))
    registered = actions.registration(cell_ctx, cell.due, raw, cell.about)
    if registered is not None:
        record(ctx, registered.decision)


def cell_stopped(
    ctx: StepContext, cell: CellTraining, err: BaseException, record: Callable[[StepContext, RecordDecision], None]
) -> None:
    """A cell stopped mid-training (the controller stopping, its model or pipeline going): what its jobs
    spent so far is a ``stopped`` entry in the model's ledger naming the pipeline, run and cell, as a
    model's own stopped training is (``actions.stopped``), before the stop goes on up."""
    spent = actions.stopped(ctx.state, cell.due, getattr(err, "usage", None), cell.about)
    if spent is not None:
        record(ctx, spent)


def cell_failed(
    ctx: StepContext, cell: CellTraining, err: BaseException, record: Callable[[StepContext, RecordDecision], None]
) -> None:
    """A cell whose training failed after its jobs spent QPU time: a ``failed`` entry naming the
    pipeline, run and cell keeps what they spent (cumulative over its attempts and resumes, as its
    checkpoint keeps it), so that it counts against governance.qpuBudgetSeconds like a model's own
    failed training; the step's ``step-failed`` entry says why the step failed."""
    usage = getattr(err, "usage", None)
    if not usage or float(usage.get("qpuSeconds", 0.0) or 0.0) <= 0.0:
        return
    message = f"training failed (it was training because {cell.due.reason}): {describe_failure(err)}"
    record(ctx, actions.training_entry(LedgerKind.FAILED, ctx.state, cell.due, message, usage, cell.about))


def _cells_elsewhere(
    ctx: StepContext,
    intent: TrainCells,
    record: Callable[[StepContext, RecordDecision], None],
    failures: dict[str, str],
    *,
    on_progress: Callable[[Any], None] | None,
    should_stop: Callable[[], bool] | None,
) -> list[Intent]:
    """The cells when the executor trains elsewhere (the operator's Jobs), asked as
    :func:`ask_elsewhere` says: a finished one is registered; those still running or not started stay
    pending, and the step concludes in a later reconcile (the operator's, when a Job changes). A failed
    Job is the cell's failure (its pods were retried up to the Job's backoffLimit); as here, the cells
    still running then finish and are registered before the step fails (``cells-open``)."""

    def ask(cell: CellTraining, start: bool) -> bytes | Running | None:
        try:
            return _train_cell(ctx, cell, on_progress=on_progress, should_stop=should_stop, start=start)
        except training().TrainingStopped as err:
            cell_stopped(ctx, cell, err, record)
            raise

    def failed(cell: CellTraining, err: Exception) -> None:
        failures[cell.cell.id] = describe_failure(err)
        cell_failed(ctx, cell, err, record)

    def finished(cell: CellTraining, raw: bytes) -> None:
        cell_trained(ctx, cell, raw, record)

    def held(cell: CellTraining, err: WaitingError) -> None:
        note_held(ctx, f"step {intent.step}: cell {cell.cell.label}", err)

    open_ = ask_elsewhere(intent.cells, ask, finished, failed, intent.parallelism, intent.fail_fast, held)
    ctx.notes[f"cells-open:{intent.step}"] = open_
    return []


def note_held(ctx: StepContext, what: str, err: WaitingError) -> None:
    """``what`` runs elsewhere and waits (``err``): noted for the outcome (the pipeline's status says so)."""
    ctx.notes.setdefault(HELD, []).append(Held(what, err.reason, describe_failure(err)))


def ask_elsewhere(
    items: Sequence[W],
    ask: Callable[[W, bool], R | Running | None],
    finished: Callable[[W, R], None],
    failed: Callable[[W, Exception], None],
    parallelism: int,
    fail_fast: bool,
    held: Callable[[W, WaitingError], None] | None = None,
) -> bool:
    """Pieces of work the executor runs elsewhere (cells' trainings, evaluations), each asked in order
    without waiting: ``ask(item, start=False)`` first, so that a finished one is handed to
    ``finished`` and a running one counts against ``parallelism``; then new ones start
    (``ask(item, start=True)``) while fewer than ``parallelism`` run. One that failed is handed to
    ``failed``; with ``fail_fast`` no new one starts then, and those running go on until they finish,
    as the in-process executor's do (Argo's failFast: nothing more scheduled, nothing left behind).
    A stopped training raises. One that waits for something outside it (``WaitingError``: its image)
    still runs, and is handed to ``held``. Whether any is still open: running, or waiting to start
    (unless it failed fast): the step concludes once none is."""
    running = 0
    not_started: list[W] = []
    failures = 0

    def settle(item: W, start: bool) -> None:
        nonlocal running, failures
        try:
            result = ask(item, start)
        except RetryableError as err:  # its Job is being replaced, or waits for its image: it still runs
            running += 1
            if held is not None and isinstance(err, WaitingError):
                held(item, err)
            return
        except Exception as err:
            if isinstance(err, training().TrainingStopped):
                raise
            failed(item, err)
            failures += 1
            return
        if result is None:
            not_started.append(item)
        elif isinstance(result, Running):
            running += 1
        else:
            finished(item, result)

    for item in items:
        settle(item, start=False)
    for item in list(not_started):
        if running >= parallelism or (fail_fast and failures):
            break
        not_started.remove(item)
        settle(item, start=True)
    return running > 0 or (bool(not_started) and not (fail_fast and failures))


# --- evaluate ---------------------------------------------------------------------------------------------


def candidates_of(ctx: PipelineContext, run: Run, step: Step) -> list[int]:
    """The versions ``step`` works on: the cells of the train step it depends on, in this run."""
    train_step = _upstream(ctx, step, "train")
    if train_step is None:
        return []
    record = run.step(train_step.name)
    cells = (record.outputs.get("cells") if record else None) or {}
    return sorted({int(v) for v in cells.values()})


def _evaluation(ctx: PipelineContext, run: Run, version: int, backend: str, shots: int) -> Entry | None:
    """The evaluation of ``version`` on ``backend`` with ``shots`` this run may use: one made in this
    run, or on a simulator or fake device (whose noise is a fixed snapshot) in any run."""
    for entry in reversed(ctx.state.ledger.for_version(version, LedgerKind.EVALUATED)):
        if entry.data.get("backend") != backend or entry.data.get("shots") != shots:
            continue
        if (entry.data.get("pipeline") or {}).get("run") == run.id or not backend.startswith("ibm:"):
            return entry
    return None


def evaluate(step: Step) -> PipelineStep:
    def work(ctx: PipelineContext) -> StepResult:
        run = _ready(ctx, step)
        if run is None or step.evaluate is None:
            return StepResult()
        shots = step.evaluate.shots or ctx.state.spec.training.shots
        pairs = tuple(
            (version, backend)
            for version in candidates_of(ctx, run, step)
            for backend in step.evaluate.backends
            if _evaluation(ctx, run, version, backend, shots) is None
        )
        if not pairs:
            return StepResult()
        train_step = _upstream(ctx, step, "train")
        parallelism = train_step.train.parallelism if train_step and train_step.train else 1
        intent = EvaluateVersions(
            step.name, pairs, shots, step.retries, duration_seconds(step.retry_backoff), parallelism
        )
        versions = len({v for v, _ in pairs})
        why = f"run {run.id}: step {step.name}: evaluate {versions} versions ({len(pairs)} jobs)"
        return StepResult((intent,), Verdict(PlanAction.TRAIN, why))

    return work


def conclude_evaluate(step: Step) -> PipelineStep:
    def conclude(ctx: PipelineContext) -> StepResult:
        run = _ready(ctx, step)
        if run is None or step.evaluate is None:
            return StepResult()
        shots = step.evaluate.shots or ctx.state.spec.training.shots
        candidates = candidates_of(ctx, run, step)
        failures = ctx.notes.get(f"evaluation-failures:{step.name}", {})
        if failures and ctx.notes.get(f"evaluations-open:{step.name}"):
            return StepResult()  # evaluations still run elsewhere: recorded first, as here
        if failures or not candidates:
            shown = "; ".join(f"version {v} on {b}: {why}" for (v, b), why in sorted(failures.items())[:5])
            message = (
                f"pipeline {ctx.name} run {run.id}: step {step.name} failed: {shown or 'no candidate to evaluate'}"
            )
            return StepResult((ctx.decision(run, LedgerKind.STEP_FAILED, None, message, step=step.name),))
        found = {(v, b): _evaluation(ctx, run, v, b, shots) for v in candidates for b in step.evaluate.backends}
        if any(entry is None for entry in found.values()):
            return StepResult()
        outputs = {
            "versions": candidates,
            "backends": list(step.evaluate.backends),
            "evaluations": {f"{v}@{b}": entry.digest for (v, b), entry in found.items() if entry is not None},
        }
        message = (
            f"pipeline {ctx.name} run {run.id}: step {step.name}: {len(candidates)} versions evaluated on "
            f"{', '.join(step.evaluate.backends)}"
        )
        return StepResult(
            (ctx.decision(run, LedgerKind.STEP_SUCCEEDED, None, message, step=step.name, outputs=outputs),)
        )

    return conclude


def carry_out_evaluations(
    ctx: StepContext,
    intent: EvaluateVersions,
    *,
    credentials: Callable[[], Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Intent]:
    """Each (version, backend) scored in one job by the reconciler's executor; each result an
    ``evaluated`` entry. Here, one after another, a failed one retried ``retries`` times with backoff
    when retrying can help; elsewhere (the operator's Jobs), as :func:`ask_elsewhere` says, at most
    ``parallelism`` at a time: those still running leave the step open until a later reconcile."""
    assert isinstance(ctx, PipelineContext)
    run = ctx.open_run()
    assert run is not None
    failures: dict[tuple[int, str], str] = ctx.notes.setdefault(f"evaluation-failures:{intent.step}", {})
    out: list[Intent] = []
    executor = ctx.services.executor
    budget_used = ctx.state.ledger.qpu_seconds(ctx.state.now, actions.budget_window(ctx.state.spec))
    pairs: list[tuple[Version, str]] = []
    for number, backend in intent.pairs:
        version = ctx.state.version(number)
        if version is None:
            failures[(number, backend)] = "the version is not in the registry"
            continue
        pairs.append((version, backend))

    def request(pair: tuple[Version, str], start: bool = True) -> EvaluationRequest:
        version, backend = pair
        return EvaluationRequest(
            namespace=ctx.state.namespace,
            name=ctx.state.name,
            version=version.number,
            version_digest=version.digest,
            artifact=version.artifact,
            spec=_spec_of(ctx, version),
            backend=backend,
            shots=intent.shots,
            key=evaluation_key(version.digest, backend, intent.shots, run.id),
            repo_root=ctx.services.registry.repo,
            credentials=credentials,
            budget_used_seconds=budget_used,
            start=start,
        )

    def evaluated(pair: tuple[Version, str], result: dict[str, Any]) -> None:
        version, backend = pair
        metrics = {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)}
        accuracy = f": accuracy {metrics['accuracy']:.3f}" if "accuracy" in metrics else ""
        calibration = f" (calibration of {result['calibration']})" if result.get("calibration") else ""
        message = f"version {version.number} evaluated on {backend}{calibration}{accuracy}"
        data = {**result, "metrics": metrics, "versionDigest": version.digest}
        out.append(ctx.decision(run, LedgerKind.EVALUATED, version.number, message, step=intent.step, **data))

    def failed(pair: tuple[Version, str], err: Exception) -> None:
        failures[(pair[0].number, pair[1])] = describe_failure(err)

    def held(pair: tuple[Version, str], err: WaitingError) -> None:
        note_held(ctx, f"step {intent.step}: version {pair[0].number} on {pair[1]}", err)

    if executor.elsewhere:
        ctx.notes[f"evaluations-open:{intent.step}"] = ask_elsewhere(
            pairs,
            lambda p, start: executor.evaluate(request(p, start)),
            evaluated,
            failed,
            intent.parallelism,
            False,
            held,
        )
        return out
    for pair in pairs:
        result = None
        for attempt in range(intent.retries + 1):
            try:
                result = executor.evaluate(request(pair))
                break
            except Exception as err:
                if stalls(err) or attempt == intent.retries:
                    failed(pair, err)
                    break
                sleep(intent.backoff * 2**attempt)
        if result is not None:
            assert isinstance(result, dict), "an executor that evaluates here returns the result"
            evaluated(pair, result)
    return out


def _spec_of(ctx: PipelineContext, version: Version) -> QuantumModelSpec:
    """The spec a version is scored with: the model's, with the data settings of the cell that trained
    it (a cell may sweep the dataset's settings too)."""
    about = version.pipeline or {}
    step = next((s for s in ctx.pipeline.spec.steps if s.name == about.get("step") and s.train), None)
    if step is None or step.train is None:
        return ctx.state.spec
    cell = next((c for c in cells_of(step.train) if c.id == about.get("cell")), None)
    if cell is None:
        return ctx.state.spec
    return QuantumModelSpec.model_validate(
        cell.apply(ctx.state.spec.model_dump(mode="json", by_alias=True, exclude_none=True))
    )


# --- select and promote ------------------------------------------------------------------------------------


def select(step: Step) -> PipelineStep:
    def choose(ctx: PipelineContext) -> StepResult:
        run = _ready(ctx, step)
        if run is None or step.select is None:
            return StepResult()
        metric = step.select.metric.value
        scores = _scores(ctx, run, step, metric)
        candidates = []
        for number, by_backend in sorted(scores.items()):
            version = ctx.state.version(number)
            jobs = int(float((version.usage if version else {}).get("primitiveJobs", 0) or 0))
            cell = str(((version.pipeline if version else None) or {}).get("cell", "")) or "(model's own)"
            candidates.append(selection.Candidate(number, cell, by_backend, jobs))
        chosen = selection.select(step.select, candidates)
        if chosen.version is None:
            message = f"pipeline {ctx.name} run {run.id}: step {step.name} failed: {chosen.reason}"
            return StepResult((ctx.decision(run, LedgerKind.STEP_FAILED, None, message, step=step.name),))
        selected = ctx.decision(
            run,
            LedgerKind.SELECTED,
            chosen.version,
            f"pipeline {ctx.name} run {run.id} selected version {chosen.version}: {chosen.reason}",
            step=step.name,
            metric=metric,
            mode=step.select.mode.value,
            aggregate=step.select.aggregate.value,
            candidates=chosen.figures,
        )
        done = ctx.decision(
            run,
            LedgerKind.STEP_SUCCEEDED,
            None,
            f"pipeline {ctx.name} run {run.id}: step {step.name}: version {chosen.version} selected",
            step=step.name,
            outputs={"selected": chosen.version},
        )
        return StepResult((selected, done), Verdict(PlanAction.PROMOTE, chosen.reason, chosen.version))

    return choose


def _scores(ctx: PipelineContext, run: Run, step: Step, metric: str) -> dict[int, dict[str, float]]:
    """version -> backend -> ``metric``: from the evaluate step before ``step`` or, without one, each
    candidate's own test-split figure on the backend it trained on."""
    scores: dict[int, dict[str, float]] = {}

    def put(version: int, backend: str, value: Any) -> None:
        scores.setdefault(version, {})[backend] = float(value) if isinstance(value, int | float) else float("nan")

    evaluate_step = _upstream(ctx, step, "evaluate")
    record = run.step(evaluate_step.name) if evaluate_step else None
    if record is not None:
        by_digest = {e.digest: e for e in ctx.state.ledger.of_kind(LedgerKind.EVALUATED)}
        for pair, digest in (record.outputs.get("evaluations") or {}).items():
            at, _, backend = str(pair).partition("@")
            entry = by_digest.get(str(digest))
            put(int(at), backend, (entry.data.get("metrics") or {}).get(metric) if entry else None)
        return scores
    for number in candidates_of(ctx, run, step):
        version = ctx.state.version(number)
        if version is not None:
            put(number, version.backend or "its own backend", version.scalar_metrics().get(metric))
    return scores


def _selected(ctx: PipelineContext, run: Run, step: Step) -> int | None:
    select_step = _upstream(ctx, step, "select")
    record = run.step(select_step.name) if select_step else None
    value = record.outputs.get("selected") if record else None
    return int(value) if isinstance(value, int) else None


def promote_gates(step: Step) -> PipelineStep:
    """The selected version judged by the model's gates (once), before promotion decides."""

    def gates(ctx: PipelineContext) -> StepResult:
        run = _ready(ctx, step)
        if run is None or step.promote is None or ctx.state.spec.promotion.pin is not None:
            return StepResult()
        number = _selected(ctx, run, step)
        version = ctx.state.version(number) if number is not None else None
        if version is None or ctx.state.ledger.gate_entry(version.number) is not None:
            return StepResult()
        return StepResult((ctx.tagged(run, step.name, actions.gate_decision(ctx.services, ctx.state, version)),))

    return gates


def conclude_promote(step: Step) -> PipelineStep:
    def conclude(ctx: PipelineContext) -> StepResult:
        run = _ready(ctx, step)
        if run is None or step.promote is None:
            return StepResult()
        number = _selected(ctx, run, step)
        state = ctx.state
        if number is None or state.version(number) is None:
            message = f"pipeline {ctx.name} run {run.id}: step {step.name} failed: no version was selected"
            return StepResult((ctx.decision(run, LedgerKind.STEP_FAILED, None, message, step=step.name),))
        pin = state.spec.promotion.pin
        if pin is not None:
            outcome = f"promotion.pin {pin} holds the model: version {number} stays a candidate"
            intents: list[Intent] = []
            verdict = Verdict(PlanAction.NOTHING, outcome, number)
        else:
            candidates = [n for n in state.candidates if n <= number]
            decided = promotion.decide(
                state.spec, state.ledger, candidates, namespace=state.namespace, name=state.name, now=state.now
            )
            intents, verdict = actions.promote(state, decided)
            intents = [ctx.tagged(run, step.name, i) if isinstance(i, RecordDecision) else i for i in intents]
            outcome = decided.reason
        message = f"pipeline {ctx.name} run {run.id}: step {step.name}: {outcome}"
        done = ctx.decision(
            run,
            LedgerKind.STEP_SUCCEEDED,
            None,
            message,
            step=step.name,
            outputs={"version": number, "outcome": outcome},
        )
        return StepResult((*intents, done), verdict)

    return conclude


def finish_run(ctx: PipelineContext) -> StepResult:
    run = ctx.open_run()
    if run is None:
        return StepResult()
    steps = ctx.pipeline.spec.steps
    failed = [s.name for s in steps if (r := run.step(s.name)) is not None and r.phase is RunPhase.FAILED]
    blocked = _blocked_by(steps, set(failed))
    unfinished = [s.name for s in steps if run.step(s.name) is None and s.name not in blocked]
    if unfinished:
        return StepResult()
    phase = RunPhase.FAILED if failed else RunPhase.SUCCEEDED
    how = f"failed at step {', '.join(failed)}" if failed else "succeeded"
    message = f"pipeline {ctx.name}: run {run.id} {how}"
    return StepResult((ctx.decision(run, LedgerKind.RUN_FINISHED, None, message, phase=phase.value),))


def _blocked_by(steps: Sequence[Step], failed: set[str]) -> set[str]:
    """The steps that cannot run because a step they depend on (directly or not) failed."""
    blocked: set[str] = set()
    changed = True
    while changed:
        changed = False
        for s in steps:
            if s.name not in blocked and any(d in failed or d in blocked for d in s.depends_on):
                blocked.add(s.name)
                changed = True
    return blocked


_WORK: dict[str, tuple[Callable[[Step], PipelineStep], ...]] = {
    "train": (train_cells, conclude_train),
    "evaluate": (evaluate, conclude_evaluate),
    "select": (select,),
    "promote": (promote_gates, conclude_promote),
}


def steps_of(pipeline: QuantumPipeline) -> list[Callable[[StepContext], StepResult]]:
    """The reconcile steps of ``pipeline``: check, start, each step's work and conclusion in
    dependency order, finish."""
    by_name = {s.name: s for s in pipeline.spec.steps}
    order = topological_order([(s.name, list(s.depends_on)) for s in pipeline.spec.steps])
    chain: list[PipelineStep] = [check, start_run]
    for name in order:
        step = by_name[name]
        chain.extend(make(step) for make in _WORK[step.action])
    chain.append(finish_run)
    return [_as_step(s) for s in chain]


def _as_step(fn: PipelineStep) -> Callable[[StepContext], StepResult]:
    def step(ctx: StepContext) -> StepResult:
        assert isinstance(ctx, PipelineContext), "a pipeline's steps run with a PipelineContext"
        return fn(ctx)

    step.__name__ = getattr(fn, "__name__", "step")
    return step


# --- the reconciler -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipelinePlan:
    action: PlanAction
    reason: str
    version: int | None = None
    changes: bool = False
    cells: dict[str, str] = field(default_factory=dict)  # cell label -> "cached: ..." or "train: ..."


@dataclass
class PipelineOutcome:
    runs: list[Run]
    decisions: list[Decision]
    message: str
    held: list[Held] = field(default_factory=list)  # work running elsewhere that waits (its image)


class PipelineRecorder(GitRecorder):
    """The Git recorder, carrying out a pipeline's work too: cells and evaluations."""

    def __init__(self, credentials: Callable[[], Any] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.credentials = credentials

    def work(self, ctx: StepContext, intent: Any) -> list[Intent] | None:
        if isinstance(intent, TrainCells):
            if not self.may_train:
                raise actions.TrainingDue(f"pipeline step {intent.step} has cells to train")
            return carry_out_cells(ctx, intent, self.record, on_progress=self.on_progress, should_stop=self.should_stop)
        if isinstance(intent, EvaluateVersions):
            if not self.may_train:
                raise actions.TrainingDue(f"pipeline step {intent.step} has versions to evaluate")
            return carry_out_evaluations(ctx, intent, credentials=self.credentials)
        result: list[Intent] | None = super().work(ctx, intent)
        return result


class PipelineReconciler(Services):
    """Runs a QuantumPipeline against its model's registry; shares the model's services. ``cell_pool``:
    the threads a train step's cells train on (a shell whose threads must outlive each step passes a
    pool of its own, e.g. the operator); by default, threads of the step's own."""

    def __init__(self, *args: Any, cell_pool: concurrent.futures.Executor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cell_pool = cell_pool

    def context(self, seen: ObservedPipeline) -> PipelineContext:
        assert seen.model is not None
        return PipelineContext(seen.model, self.state(seen.model.model), self, seen=seen)

    def plan(self, seen: ObservedPipeline) -> PipelinePlan:
        if seen.model is None:
            applied_verdict = check_without_model(seen)
            return PipelinePlan(applied_verdict.action, applied_verdict.reason)
        ctx = self.context(seen)
        open_run = ctx.open_run()
        applied = run_steps(ctx, steps_of(seen.pipeline), DryRun(), model_status.Facts())
        verdict = applied.verdict or Verdict(PlanAction.NOTHING, "the open run has nothing to do now")
        if applied.changes:  # a run starts or goes on: say which, and the furthest step the dry run saw
            head = ctx.notes.get("start") or f"run {open_run.id if open_run else ''} goes on"
            detail = f"; then {verdict.reason}" if verdict.reason != head else ""
            verdict = Verdict(PlanAction.RUN, f"{head}{detail}", verdict.version)
        cells: dict[str, str] = {}
        for key, plan in ctx.notes.items():
            if key.startswith("cells:") and isinstance(plan, CellPlan):
                for cell, (_, why) in plan.cached.items():
                    cells[plan.labels[cell]] = f"cached: {why}"
                for pending in plan.pending:
                    cells[pending.cell.label] = f"train: {plan.misses.get(pending.cell.id, '')}"
                for cell, version in plan.done.items():
                    cells[plan.labels[cell]] = f"done: version {version} in this run"
        return PipelinePlan(verdict.action, verdict.reason, verdict.version, applied.changes, cells)

    def reconcile(
        self,
        seen: ObservedPipeline,
        *,
        on_progress: Callable[[Any], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        may_train: bool = True,
        synced: bool = False,
    ) -> PipelineOutcome:
        """``synced``: the caller brought the registry up to date with its remote just before, and read
        ``seen``'s revision after it (a second fetch a moment later would find nothing new, and could
        move HEAD past the revision the run is said to start at)."""
        if seen.model is None:
            return PipelineOutcome([], [], check_without_model(seen).reason)
        model = seen.model.model
        ns, name = model.metadata.namespace, model.metadata.name
        if not synced:
            self.registry.sync()
        credentials = self._credentials(model.metadata.namespace, model.spec)

        def attempt(recorder: PipelineRecorder) -> tuple[PipelineContext, Applied]:
            ctx = self.context(seen)
            return ctx, run_steps(ctx, steps_of(seen.pipeline), recorder, model_status.Facts())

        new_recorder = functools.partial(
            PipelineRecorder, credentials, on_progress=on_progress, should_stop=should_stop, may_train=may_train
        )
        decisions, (ctx, applied) = decide_and_push(self.registry, ns, name, new_recorder, attempt)
        verdict = applied.verdict
        return PipelineOutcome(ctx.runs(), decisions, verdict.reason if verdict else "", ctx.notes.get(HELD, []))

    def stop_elsewhere(
        self,
        seen: ObservedPipeline,
        stop_training: Callable[[Due], dict[str, float] | None],
        stop_evaluation: Callable[[str], None],
    ) -> list[Decision]:
        """The pipeline is deleted while its open run trains cells (or evaluates versions) elsewhere
        (the operator's Jobs), which do not stop with it as a cell training here does (``should_stop``):
        each cell of a train step the run has not concluded is stopped by ``stop_training(due)``, which
        answers what its jobs spent (cumulative, as its checkpoint journal counts it; None when nothing
        of it ran), and each evaluation an evaluate step still needs by ``stop_evaluation(key)``. What
        each cell spent is a ``stopped`` entry naming the pipeline, run and cell (``actions.stopped``,
        as for a cell stopped here: cumulative, so a second ask adds nothing), pushed now. Nothing else
        is decided: the run stays open in the ledger, as a run stopped here does."""
        if seen.model is None:
            return []
        model = seen.model.model
        ns, name = model.metadata.namespace, model.metadata.name
        self.registry.sync()

        def attempt(recorder: GitRecorder) -> None:
            ctx = self.context(seen)
            run = ctx.open_run()
            if run is None:
                return
            for step in seen.pipeline.spec.steps:
                if run.step(step.name) is not None:
                    continue  # concluded: nothing of it runs
                if step.train is not None:
                    for cell in plan_cells(ctx, run, step).pending:
                        spent = actions.stopped(ctx.state, cell.due, stop_training(cell.due), cell.about)
                        if spent is not None:
                            recorder.record(ctx, spent)
                if step.evaluate is not None:
                    shots = step.evaluate.shots or ctx.state.spec.training.shots
                    for number in candidates_of(ctx, run, step):
                        version = ctx.state.version(number)
                        for backend in step.evaluate.backends:
                            if version is not None and _evaluation(ctx, run, number, backend, shots) is None:
                                stop_evaluation(evaluation_key(version.digest, backend, shots, run.id))

        decisions, _ = decide_and_push(self.registry, ns, name, GitRecorder, attempt)
        return decisions

    def _credentials(self, namespace: str, spec: QuantumModelSpec) -> Callable[[], Any] | None:
        lookup, secret = self.credentials, spec.training.credentials_secret
        if not secret or lookup is None:
            return None
        return lambda: lookup(namespace, secret)


def check_without_model(seen: ObservedPipeline) -> Verdict:
    pipeline = seen.pipeline
    if pipeline.spec.suspend:
        return Verdict(PlanAction.SUSPEND, "spec.suspend is true: no run starts")
    why = f"waiting for QuantumModel {pipeline.spec.model!r} to exist in namespace {pipeline.metadata.namespace!r}"
    return Verdict(PlanAction.WAIT, why)
