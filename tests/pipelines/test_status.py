"""A pipeline's status from its runs: phase, conditions, and the last runs with small outputs only."""

from __future__ import annotations

from datetime import UTC, datetime

from controller.api.quantumpipeline import QuantumPipelineStatus, RunPhase
from controller.engine.pipelines.runs import KEPT_IN_STATUS, Run, StepRecord
from controller.engine.pipelines.status import OUTPUT_LIMIT, pipeline_status

NOW = datetime(2026, 1, 1, tzinfo=UTC)
STEPS = ["sweep", "noise", "pick", "promote"]


def run(number: int, phase: RunPhase = RunPhase.SUCCEEDED, **steps: StepRecord) -> Run:
    return Run(
        id=f"run-{number:010d}",
        cause="request",
        reason="a run was requested",
        revision="a" * 40,
        spec_digest="sha256:x",
        request=None,
        started="2026-01-01T00:00:00Z",
        finished=None if phase is RunPhase.RUNNING else "2026-01-01T00:01:00Z",
        phase=phase,
        steps=dict(steps),
    )


def conditions(status: QuantumPipelineStatus) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_a_pipeline_that_has_not_run_is_ready_for_its_triggers() -> None:
    status = pipeline_status(None, now=NOW, generation=3)
    assert status.phase == "Ready" and status.runs == [] and status.observed_generation == 3
    assert conditions(status)["Ready"] == ("True", "Ready")
    assert conditions(status)["Stalled"] == ("False", "Progressing")


def test_an_open_run_is_running_with_the_steps_not_reached_pending() -> None:
    sweep = StepRecord("sweep", RunPhase.SUCCEEDED, "2 cells", {"cells": {"a": 2, "b": 3}, "trained": ["a", "b"]})
    status = pipeline_status(None, runs=[run(1, RunPhase.RUNNING, sweep=sweep)], steps=STEPS, now=NOW)
    assert status.phase == "Running"
    assert conditions(status)["Reconciling"] == ("True", "Running")
    assert conditions(status)["Ready"][0] == "False"
    [shown] = status.runs
    assert [(s.name, s.phase) for s in shown.steps] == [
        ("sweep", RunPhase.SUCCEEDED),
        ("noise", RunPhase.PENDING),
        ("pick", RunPhase.PENDING),
        ("promote", RunPhase.PENDING),
    ]
    assert shown.steps[0].outputs == {"cells": "2", "trained": "2"}, "collections are counted, never copied"


def test_an_open_run_whose_work_waits_for_its_image_is_stalled_naming_which_until_it_goes_on() -> None:
    from controller.engine.errors import WaitReason
    from controller.engine.reconcile.executor import Held

    waits = [
        Held(f"step sweep: cell training.seed={seed}", WaitReason.IMAGE, f"training Job j{seed} waits: its image")
        for seed in range(5)
    ]
    status = pipeline_status(None, runs=[run(1, RunPhase.RUNNING)], steps=STEPS, held=waits, now=NOW)
    assert status.phase == "Running" and conditions(status)["Reconciling"] == ("True", "Running")
    stalled = next(c for c in status.conditions if c.type == "Stalled")
    assert (stalled.status, stalled.reason) == ("True", "WaitingForImage")
    assert stalled.message.startswith("step sweep: cell training.seed=0: training Job j0 waits: its image; ")
    assert "training.seed=2" in stalled.message and "training.seed=3" not in stalled.message
    assert stalled.message.endswith("(and 2 more)") and "training.seed=0" in (status.message or "")
    going_on = pipeline_status(status, runs=[run(1, RunPhase.RUNNING)], steps=STEPS, now=NOW)
    assert conditions(going_on)["Stalled"] == ("False", "Progressing")


def test_a_failed_run_stalls_naming_its_failed_step_and_skips_the_rest() -> None:
    failed = StepRecord("sweep", RunPhase.FAILED, "step sweep failed: cell reps=2: its spec is not valid")
    status = pipeline_status(None, runs=[run(1), run(2, RunPhase.FAILED, sweep=failed)], steps=STEPS, now=NOW)
    assert status.phase == "Failed"
    assert conditions(status)["Stalled"] == ("True", "RunFailed")
    assert "cell reps=2" in (status.message or "")
    latest = status.runs[0]
    assert latest.id == "run-0000000002", "newest first"
    assert [s.phase for s in latest.steps] == [RunPhase.FAILED, *[RunPhase.SKIPPED] * 3]


def test_status_keeps_the_last_runs_and_cuts_long_outputs() -> None:
    pick = StepRecord("pick", RunPhase.SUCCEEDED, "selected", {"selected": 7, "note": "x" * 10_000, "none": None})
    runs = [run(n, pick=pick) for n in range(1, KEPT_IN_STATUS + 5)]
    status = pipeline_status(None, runs=runs, steps=["pick"], now=NOW)
    assert status.phase == "Succeeded" and conditions(status)["Ready"] == ("True", "Succeeded")
    assert len(status.runs) == KEPT_IN_STATUS and status.runs[0].id == f"run-{KEPT_IN_STATUS + 4:010d}"
    outputs = status.runs[0].steps[0].outputs
    assert outputs["selected"] == "7" and len(outputs["note"]) == OUTPUT_LIMIT and "none" not in outputs


def test_invalid_or_without_its_model_a_pipeline_is_stalled() -> None:
    invalid = pipeline_status(None, problems=["spec.steps: dependsOn has a cycle: a -> b -> a"], now=NOW)
    assert invalid.phase == "Failed" and conditions(invalid)["Stalled"] == ("True", "Invalid")
    assert conditions(invalid)["Validated"] == ("False", "Invalid")
    orphan = pipeline_status(None, model_found=False, now=NOW)
    assert orphan.phase == "Pending" and conditions(orphan)["Stalled"] == ("True", "ModelNotFound")


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    first = pipeline_status(None, runs=[run(1)], steps=STEPS, now=NOW)
    later = pipeline_status(first, runs=[run(1), run(2)], steps=STEPS, now=datetime(2026, 1, 2, tzinfo=UTC))
    ready = {c.type: c for c in later.conditions}["Ready"]
    assert ready.last_transition_time == {c.type: c for c in first.conditions}["Ready"].last_transition_time


def test_a_failed_reconcile_keeps_the_runs_and_says_why_without_stalling() -> None:
    shown = pipeline_status(None, runs=[run(1)], steps=STEPS, now=NOW)
    failed = pipeline_status(shown, error="GitError: the remote rejected the push", now=NOW)
    assert failed.phase == "Succeeded" and failed.runs == shown.runs
    assert conditions(failed)["Ready"] == ("False", "ReconcileFailed")
    assert conditions(failed)["Stalled"] == ("False", "Retrying")
    assert "rejected the push" in (failed.message or "")
