"""Pipeline runs end to end on real repositories and tiny trainings: sweep, evaluate under a fake
device's noise, select, promote through the model's gates; cached reruns, crashes, failures, pins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.engine.decisions import PlanAction
from tests.pipelines.runs import Controller, Trainer, kinds, ledger, pipeline_spec, seeded
from tests.registry.repos import Repos, git

pytestmark = pytest.mark.slow


def test_a_committed_pipeline_runs_once_end_to_end(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    controller = Controller(work, tmp_path)
    (outcome,) = controller.once()
    assert kinds(work) == [
        "run-started",
        "registered",  # reps 2; the cell with reps 1 is the model's own spec: version 1, from the cache
        "step-succeeded",
        "evaluated",
        "evaluated",
        "evaluated",
        "evaluated",
        "step-succeeded",
        "selected",
        "step-succeeded",
        "gate-passed",
        "promoted",
        "step-succeeded",
        "run-finished",
    ]
    assert controller.trainer.calls == [1, 2]  # the model's own (reps 1), then the one cell not cached
    (run,) = outcome.runs
    assert run.phase == "Succeeded" and run.cause == "specChange"
    sweep = run.step("sweep")
    assert sweep is not None and sorted(sweep.outputs["cells"].values()) == [1, 2]
    assert list(sweep.outputs["cached"].values()) == ["version 1 was trained from the same input"]
    own = json.loads((work / "registry/demo/tiny/versions/1.json").read_text())
    cell = json.loads((work / "registry/demo/tiny/versions/2.json").read_text())
    assert "pipeline" not in own
    assert cell["pipeline"] == {"name": "sweep", "run": run.id, "step": "sweep", "cell": sweep.outputs["trained"][0]}
    evaluated = [e for e in ledger(work) if e["kind"] == "evaluated"]
    manila = [e for e in evaluated if e["data"]["backend"] == "fake:manila"]
    assert len(manila) == 2 and all(e["data"]["calibration"].startswith("20") for e in manila)
    selected = next(e for e in ledger(work) if e["kind"] == "selected")
    assert {c["version"] for c in selected["data"]["candidates"]} == {1, 2}
    promoted = [e for e in ledger(work) if e["kind"] == "promoted"]
    assert promoted[-1]["version"] == selected["version"]
    trailers = repos.remote_log(
        "-1", "--format=%(trailers:key=Qmlops-Pipeline,valueonly)%(trailers:key=Qmlops-Run,valueonly)"
    )
    assert trailers.split() == ["demo/sweep", run.id]

    # a second pass changes nothing: the run is finished, no trigger is due, the model does not retrain
    head = git(work, "rev-parse", "HEAD")
    controller.once()
    assert git(work, "rev-parse", "HEAD") == head
    plan = controller.pipelines.plan(controller.observe().pipelines[0][0])
    assert plan.action is PlanAction.NOTHING and not plan.changes
    model_plan = controller.models.plan(controller.observe().models[0][0])
    assert not model_plan.changes, model_plan


def test_a_rerun_reuses_every_cell_and_evaluation_and_trains_nothing(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    controller = Controller(work, tmp_path)
    controller.once()
    trained = len(controller.trainer.calls)
    plan = controller.pipelines.plan(controller.observe({"demo/sweep": "2026-12-03T10:00:00Z"}).pipelines[0][0])
    assert (
        plan.action is PlanAction.RUN
        and plan.reason.startswith("run run-")
        and "starts: a run was requested" in plan.reason
    )
    assert plan.changes and all(why.startswith("cached: ") for why in plan.cells.values())
    (outcome,) = controller.once({"demo/sweep": "2026-12-03T10:00:00Z"})
    assert len(controller.trainer.calls) == trained
    second = outcome.runs[-1]
    assert second.cause == "request" and second.phase == "Succeeded"
    sweep = second.step("sweep")
    assert sweep is not None and set(sweep.outputs["cached"]) == set(sweep.outputs["cells"])
    assert kinds(work).count("evaluated") == 4  # the first run's, reused
    # the same request is answered once
    head = git(work, "rev-parse", "HEAD")
    controller.once({"demo/sweep": "2026-12-03T10:00:00Z"})
    assert git(work, "rev-parse", "HEAD") == head


class Crash(BaseException):
    """The process dying: nothing on the way catches it."""


def test_a_run_killed_in_the_middle_resumes_and_registers_nothing_twice(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    Controller(work, tmp_path).models.reconcile(Controller(work, tmp_path).observe().models[0][0])

    def die_on_reps_two(spec: object) -> None:
        if spec.circuit.ansatz.reps == 2:  # type: ignore[attr-defined]
            raise Crash

    crashing = Controller(work, tmp_path, Trainer(fail=die_on_reps_two))
    with pytest.raises(Crash):
        crashing.once()
    again = Controller(work, tmp_path)
    (outcome,) = again.once()
    assert outcome.runs[-1].phase == "Succeeded" and len(outcome.runs) == 1
    registered = [e for e in ledger(work) if e["kind"] == "registered"]
    assert len(registered) == len({e["data"]["artifactDigest"] for e in registered}) == 2
    assert again.trainer.calls == [2]  # only the cell that never finished


def test_a_cell_that_cannot_train_fails_the_run_and_the_run_stays_failed(repos: Repos, tmp_path: Path) -> None:
    # 3 qubits cannot carry the ZFeatureMap over 2 features on RealAmplitudes... valid; 1 qubit is too few
    work = seeded(repos, pipeline_spec(matrix='{"circuit.qubits": [2, 1]}'))
    controller = Controller(work, tmp_path)
    (outcome,) = controller.once()
    run = outcome.runs[-1]
    assert run.phase == "Failed"
    failed = run.step("sweep")
    assert failed is not None and failed.phase == "Failed" and "circuit.qubits=1" in failed.message
    assert kinds(work)[-2:] == ["step-failed", "run-finished"]
    head = git(work, "rev-parse", "HEAD")
    controller.once()
    assert git(work, "rev-parse", "HEAD") == head  # failed stays failed until the spec changes or a rerun


def test_a_pin_in_the_models_spec_wins_over_the_selection(repos: Repos, tmp_path: Path) -> None:
    pinned = """\
    policy: auto
    pin: 1
    gates:
      - {metric: accuracy, min: 0.5}"""
    work = seeded(repos, promotion=pinned)
    controller = Controller(work, tmp_path)
    (outcome,) = controller.once()
    promote = outcome.runs[-1].step("promote")
    assert promote is not None and "promotion.pin 1 holds the model" in promote.outputs["outcome"]
    champions = [e["version"] for e in ledger(work) if e["kind"] in ("promoted", "rolled-back")]
    assert champions == [1]


def test_a_commit_touching_a_glob_starts_a_run_and_the_registry_never_does(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    controller = Controller(work, tmp_path)
    controller.once()
    repos.commit_file(work, "docs/notes.md", "notes\n", "docs")
    repos.push(work)
    assert controller.once()[0].runs[-1].cause == "specChange"  # still the first run: nothing new
    repos.pull(work)
    repos.commit_file(work, "data/new.txt", "x\n", "data")
    repos.push(work)
    (outcome,) = controller.once()
    assert [r.cause for r in outcome.runs] == ["specChange", "gitChange"]
    assert "data/new.txt changed since the last run" in outcome.runs[-1].reason
