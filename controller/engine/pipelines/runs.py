"""A pipeline's runs, read back from the model's ledger: every run's life is written there as entries
(``run-started``, ``step-succeeded``, ``step-failed``, ``run-finished``, and the ``registered``,
``evaluated`` and ``selected`` entries its steps make), each carrying ``data.pipeline``:
``{name, run, step?, cell?}``. Nothing else is needed to tell where a run stands or to resume it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controller.api.quantumpipeline import RunPhase
from controller.engine.decisions import LedgerKind
from controller.engine.pipelines.triggers import LastRun
from controller.engine.registry.ledger import Entry, Ledger, parse_time

KEPT_IN_STATUS = 10  # runs shown in a pipeline's status (the ledger keeps them all)


@dataclass
class StepRecord:
    name: str
    phase: RunPhase
    message: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Run:
    id: str
    cause: str
    reason: str
    revision: str
    spec_digest: str
    request: str | None
    started: str
    finished: str | None = None
    phase: RunPhase = RunPhase.RUNNING
    steps: dict[str, StepRecord] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)  # every entry of the run, in order

    @property
    def open(self) -> bool:
        return self.finished is None

    def step(self, name: str) -> StepRecord | None:
        return self.steps.get(name)

    def succeeded(self, name: str) -> bool:
        record = self.steps.get(name)
        return record is not None and record.phase is RunPhase.SUCCEEDED

    def last_run(self) -> LastRun:
        return LastRun(self.revision, parse_time(self.started), self.spec_digest, self.request)

    def of_step(self, step: str, kind: LedgerKind) -> list[Entry]:
        return [e for e in self.entries if e.kind == kind and (e.data.get("pipeline") or {}).get("step") == step]


def runs_of(ledger: Ledger, pipeline: str) -> list[Run]:
    """The pipeline's runs, oldest first."""
    runs: dict[str, Run] = {}
    for entry in ledger.entries:
        if entry.pipeline != pipeline:
            continue
        about = entry.data.get("pipeline") or {}
        run_id = str(about.get("run", ""))
        if entry.kind == LedgerKind.RUN_STARTED:
            runs[run_id] = Run(
                id=run_id,
                cause=str(entry.data.get("cause", "")),
                reason=str(entry.data.get("reason", "")),
                revision=str(entry.data.get("revision", "")),
                spec_digest=str(entry.data.get("specDigest", "")),
                request=entry.data.get("request"),
                started=entry.at,
            )
        run = runs.get(run_id)
        if run is None:
            continue
        run.entries.append(entry)
        step = str(about.get("step", ""))
        if entry.kind == LedgerKind.STEP_SUCCEEDED:
            outputs = entry.data.get("outputs")
            run.steps[step] = StepRecord(step, RunPhase.SUCCEEDED, entry.message, dict(outputs or {}))
        elif entry.kind == LedgerKind.STEP_FAILED:
            run.steps[step] = StepRecord(step, RunPhase.FAILED, entry.message)
        elif entry.kind == LedgerKind.RUN_FINISHED:
            run.finished = entry.at
            run.phase = RunPhase.SUCCEEDED if entry.data.get("phase") == RunPhase.SUCCEEDED else RunPhase.FAILED
    return list(runs.values())
