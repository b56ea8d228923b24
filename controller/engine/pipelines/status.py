"""A QuantumPipeline's status, from what its runs in the ledger say and what validation found: the one
place that sets a pipeline's phase, conditions and ``runs`` (the operator writes it; the runner may
show it).

- invalid (a problem in the spec, or against its model's governance): ``Failed``, Stalled;
- its model does not exist: ``Pending``, Stalled (``ModelNotFound``) until the model appears;
- the latest run is open: ``Running``, Reconciling; Stalled too while a cell or an evaluation that
  runs elsewhere waits for something outside it (``held``: its Job's image cannot be pulled), the
  reason saying what (``WaitReason``) and the message which and why, until it goes on;
- the latest run succeeded: ``Succeeded``, Ready; it failed: ``Failed``, Stalled until the spec
  changes or a rerun is requested;
- no run yet: ``Ready``, waiting for its triggers;
- the reconcile itself failed (Git, the cluster): the phase and runs it had, Ready False
  (``ReconcileFailed``) with the error, not Stalled: the shell retries.

``runs`` holds the last ``KEPT_IN_STATUS`` runs, newest first, with each step's phase, message and
small outputs as strings: counts and scalars, never a step's full results (those are in Git).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from controller.api.meta import ConditionType
from controller.api.quantumpipeline import PipelineRun, QuantumPipelineStatus, RunPhase, StepStatus
from controller.engine import status as engine_status
from controller.engine.pipelines.runs import KEPT_IN_STATUS, Run, StepRecord
from controller.engine.reconcile.executor import Held
from controller.engine.text import scrub

MESSAGE_LIMIT = 512  # characters of a step's message kept in status
OUTPUT_LIMIT = 128  # characters of one output's value
OUTPUTS_KEPT = 8  # outputs per step
HELD_SHOWN = 3  # pieces of waiting work a condition names


def pipeline_status(
    previous: QuantumPipelineStatus | None,
    *,
    problems: Sequence[str] = (),
    model_found: bool = True,
    runs: Sequence[Run] = (),
    steps: Sequence[str] = (),
    waiting: str = "",
    held: Sequence[Held] = (),
    error: str = "",
    generation: int | None = None,
    requested_at: str | None = None,
    now: datetime,
) -> QuantumPipelineStatus:
    """The status: ``problems`` are validation errors (located messages), ``runs`` the pipeline's
    runs oldest first (``runs_of``), ``steps`` the pipeline's step names in spec order, ``waiting``
    what the engine said it waits for when no run is open, ``held`` the run's work that waits outside
    it (shown while the run is open), ``error`` why the reconcile failed."""
    before = previous or QuantumPipelineStatus()
    conditions = list(before.conditions)

    def put(kind: ConditionType, value: bool, reason: str, message: str) -> None:
        nonlocal conditions
        conditions = engine_status.set_condition(
            conditions, kind, value, reason, message, generation=generation, now=now
        )

    latest = runs[-1] if runs else None
    shown = [run_status(r, steps) for r in reversed(runs[-KEPT_IN_STATUS:])] if runs else list(before.runs)
    reconciling = False
    if error and not problems:
        phase, message = before.phase or "Pending", scrub(error)[:MESSAGE_LIMIT]
        put(ConditionType.READY, False, "ReconcileFailed", message)
        put(ConditionType.STALLED, False, "Retrying", message)
    elif problems:
        phase, message = "Failed", scrub("; ".join(problems))[:MESSAGE_LIMIT]
        put(ConditionType.VALIDATED, False, "Invalid", message)
        put(ConditionType.READY, False, "Invalid", message)
        put(ConditionType.STALLED, True, "Invalid", message)
    elif not model_found:
        phase, message = "Pending", waiting or "waiting for its QuantumModel to exist in this namespace"
        put(ConditionType.VALIDATED, True, "Valid", "spec is valid")
        put(ConditionType.READY, False, "ModelNotFound", message)
        put(ConditionType.STALLED, True, "ModelNotFound", message)
    else:
        put(ConditionType.VALIDATED, True, "Valid", "spec is valid and keeps its model's governance")
        if latest is not None and latest.open:
            phase, reconciling = RunPhase.RUNNING.value, True
            message = f"run {latest.id} ({latest.cause}) is running" + (f": {waiting}" if waiting else "")
            if held:
                said = held_message(held)
                message = f"run {latest.id} ({latest.cause}) is running; {said}"
                put(ConditionType.READY, False, "Running", message)
                put(ConditionType.STALLED, True, held[0].reason.value, said)
            else:
                put(ConditionType.READY, False, "Running", message)
                put(ConditionType.STALLED, False, "Progressing", "")
        elif latest is not None and latest.phase is RunPhase.FAILED:
            failed = [s for s in latest.steps.values() if s.phase is RunPhase.FAILED]
            why = scrub(failed[0].message)[:MESSAGE_LIMIT] if failed else "a step failed"
            phase, message = RunPhase.FAILED.value, f"run {latest.id} failed: {why}"
            put(ConditionType.READY, False, "RunFailed", message)
            put(ConditionType.STALLED, True, "RunFailed", message)
        elif latest is not None:
            phase, message = RunPhase.SUCCEEDED.value, f"run {latest.id} succeeded"
            if waiting:
                message += f"; {waiting}"
            put(ConditionType.READY, True, "Succeeded", message)
            put(ConditionType.STALLED, False, "Progressing", "")
        else:
            phase, message = "Ready", waiting or "valid; runs start from its triggers"
            put(ConditionType.READY, True, "Ready", message)
            put(ConditionType.STALLED, False, "Progressing", "")
    if reconciling:
        put(ConditionType.RECONCILING, True, "Running", message)
    else:
        put(ConditionType.RECONCILING, False, "Idle", "")
    return QuantumPipelineStatus(
        observed_generation=generation,
        phase=phase,
        message=message,
        conditions=engine_status.in_order(conditions),
        runs=shown,
        last_handled_reconcile_at=requested_at,
    )


def held_message(held: Sequence[Held]) -> str:
    """Which work waits and why, the first few of it, bounded."""
    shown = "; ".join(f"{h.what}: {h.message}" for h in held[:HELD_SHOWN])
    more = f" (and {len(held) - HELD_SHOWN} more)" if len(held) > HELD_SHOWN else ""
    return scrub(shown)[: MESSAGE_LIMIT * 2] + more


def run_status(run: Run, steps: Sequence[str] = ()) -> PipelineRun:
    """One run as status shows it: every step of the pipeline (``steps``, in spec order; the run's
    recorded steps when not given), those not reached Pending while the run is open, Skipped after."""
    names = list(steps) or list(run.steps)
    names += [n for n in run.steps if n not in names]
    return PipelineRun(
        id=run.id,
        trigger=run.cause,
        revision=run.revision or None,
        phase=run.phase,
        started=run.started,
        finished=run.finished,
        steps=[_step_status(name, run.steps.get(name), run.open) for name in names],
    )


def _step_status(name: str, record: StepRecord | None, open_run: bool) -> StepStatus:
    if record is None:
        return StepStatus(name=name, phase=RunPhase.PENDING if open_run else RunPhase.SKIPPED)
    return StepStatus(
        name=name,
        phase=record.phase,
        message=scrub(record.message)[:MESSAGE_LIMIT] or None,
        outputs=small_outputs(record.outputs),
    )


def small_outputs(outputs: dict[str, Any]) -> dict[str, str]:
    """A step's outputs as short strings: a scalar as itself (cut), a list or mapping as its count."""
    small: dict[str, str] = {}
    for key in sorted(outputs)[:OUTPUTS_KEPT]:
        value = outputs[key]
        if isinstance(value, dict | list | tuple | set):
            small[key] = str(len(value))
        elif value is None:
            continue
        else:
            small[key] = scrub(str(value))[:OUTPUT_LIMIT]
    return small
