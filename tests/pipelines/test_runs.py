"""Pipeline runs end to end on real repositories and tiny trainings: sweep, evaluate under a fake
device's noise, select, promote through the model's gates; cached reruns, crashes, failures, pins."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from controller.engine import training
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


def test_a_cell_stopped_in_training_resumes_from_its_checkpoint(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos, pipeline_spec(matrix='{"circuit.ansatz.reps": [2]}'))
    controller = Controller(work, tmp_path)
    ((observed, _),) = controller.observe().models
    controller.models.reconcile(observed)
    seen: list[int] = []

    def progress(update: object) -> None:
        seen.append(int(update.iteration))  # type: ignore[attr-defined]

    with pytest.raises(training.TrainingStopped):
        controller.pipelines.reconcile(
            controller.observe().pipelines[0][0], on_progress=progress, should_stop=lambda: len(seen) >= 2
        )
    assert seen == [1, 2]
    seen.clear()
    (outcome,) = [controller.pipelines.reconcile(controller.observe().pipelines[0][0], on_progress=progress)]
    assert seen and seen[0] == 3  # the third iteration: the first two came from the checkpoint
    assert outcome.runs[-1].phase == "Succeeded" and len(outcome.runs) == 1


def test_a_failure_retrying_can_fix_is_retried_and_without_fail_fast_the_other_cells_still_run(
    repos: Repos, tmp_path: Path
) -> None:
    spec = pipeline_spec(matrix='{"circuit.ansatz.reps": [2, 3, 4]}', fail_fast=False).replace(
        "      retryBackoff: 0s\n", "      retryBackoff: 0s\n      retries: 1\n"
    )
    work = seeded(repos, spec)
    attempts: dict[int, int] = {}

    def flaky(spec: object) -> None:
        reps = spec.circuit.ansatz.reps  # type: ignore[attr-defined]
        attempts[reps] = attempts.get(reps, 0) + 1
        if reps == 3 and attempts[reps] == 1:
            raise ConnectionError("the simulator's host went away")  # retryable: not a spec or data error
        if reps == 4:
            raise training.DatasetError("dataset.source: a failure retrying cannot fix")

    controller = Controller(work, tmp_path, Trainer(fail=flaky))
    (outcome,) = controller.once()
    assert attempts[3] == 2 and attempts[4] == 1  # retried once; a stalling error is not retried
    run = outcome.runs[-1]
    sweep = run.step("sweep")
    assert run.phase == "Failed" and sweep is not None and "circuit.ansatz.reps=4" in sweep.message
    cells = [e for e in ledger(work) if e["kind"] == "registered" and e["data"].get("pipeline")]
    assert len(cells) == 2  # reps 2 and 3 (after its retry) registered; reps 4 failed


def test_two_controllers_racing_on_one_run_register_each_cell_once(repos: Repos, tmp_path: Path) -> None:
    import threading

    work_a = seeded(repos)
    first = Controller(work_a, tmp_path)
    ((observed, _),) = first.observe().models
    first.models.reconcile(observed)
    work_b = repos.clone("work-b")
    a_done = threading.Event()

    def wait_for_a(spec: object) -> None:
        a_done.wait(120)

    second = Controller(work_b, tmp_path, Trainer(fail=wait_for_a))
    seen_b = second.observe().pipelines[0][0]
    failures: list[BaseException] = []

    def run_b() -> None:
        try:
            second.pipelines.reconcile(seen_b)
        except BaseException as err:  # surfaced below
            failures.append(err)

    thread = threading.Thread(target=run_b)
    thread.start()
    try:
        (outcome,) = [first.pipelines.reconcile(first.observe().pipelines[0][0])]
    finally:
        a_done.set()
        thread.join(180)
    assert not failures, failures
    assert outcome.runs[-1].phase == "Succeeded"
    repos.pull(work_a)
    registered = [e for e in ledger(work_a) if e["kind"] == "registered"]
    assert len(registered) == 2  # the model's own and the one cell: B's work was dropped, not registered again
    assert [e["kind"] for e in ledger(work_a)].count("run-started") == 1
    assert [e["kind"] for e in ledger(work_a)].count("run-finished") == 1


def test_retention_never_retires_a_version_a_run_in_progress_still_needs(repos: Repos, tmp_path: Path) -> None:
    from tests.pipelines.runs import GOVERNANCE
    from tests.registry.repos import tiny_spec

    sweep = pipeline_spec(matrix='{"circuit.ansatz.reps": [2, 3, 4]}').replace("parallelism: 2", "parallelism: 1")
    work = seeded(repos, sweep)
    keep_one = GOVERNANCE + "\n    retention: {maxVersions: 1}"
    controller = Controller(work, tmp_path)
    for iterations in (3, 4):  # versions 1 and 2, each promoted; version 1 retired
        repos.commit_file(work, "specs/tiny.yaml", tiny_spec(iterations=iterations, governance=keep_one), "tiny")
        repos.push(work)
        ((observed, _),) = controller.observe().models
        controller.models.reconcile(observed)
    assert [(e["kind"], e["version"]) for e in ledger(work) if e["kind"] == "retired"] == [("retired", 1)]
    started: list[int] = []

    def progress(update: object) -> None:
        if int(update.iteration) == 1:  # type: ignore[attr-defined]
            started.append(1)

    with pytest.raises(training.TrainingStopped):  # cells 2 and 3 registered (versions 3, 4); the third stopped
        controller.pipelines.reconcile(
            controller.observe().pipelines[0][0], on_progress=progress, should_stop=lambda: len(started) >= 3
        )
    assert [e["version"] for e in ledger(work) if e["kind"] == "registered"] == [1, 2, 3, 4]
    ((observed, _),) = controller.observe().models
    controller.models.reconcile(observed)  # 3 versions kept, 1 allowed: 2 is the champion, 4 the newest
    assert [e["version"] for e in ledger(work) if e["kind"] == "retired"] == [1]  # 3 belongs to the open run
    assert (work / "registry/demo/tiny/versions/3.json").is_file()


def ibm_cell(repos: Repos, tmp_path: Path) -> tuple[Path, Controller]:
    """A model on IBM (stood in, 1.5 QPU seconds billed a job) with a QPU budget, and a one-cell sweep of
    it: the repository and a controller with IBM credentials."""
    from controller.engine.training import Credentials
    from tests.pipelines.runs import GOVERNANCE
    from tests.registry.repos import tiny_spec

    governance = GOVERNANCE.replace('"fake:*"', '"ibm:*"') + "\n    qpuBudgetSeconds: 100"
    on_ibm = tiny_spec(iterations=2, governance=governance).replace(
        "backend: local:statevector", "backend: ibm:fake_lima\n    executionMode: job\n    credentialsSecret: ibm"
    )
    sweep = pipeline_spec(matrix='{"circuit.ansatz.reps": [2]}', backends='"local:aer"')
    work = seeded(repos, sweep.replace("parallelism: 2", "parallelism: 1"))
    repos.commit_file(work, "specs/tiny.yaml", on_ibm, "tiny on IBM")
    repos.push(work)
    ibm = lambda namespace, name: Credentials(token="tok-0123456789", instance="crn:standin")  # noqa: E731
    return work, Controller(work, tmp_path, credentials=ibm)


def test_cells_stopped_mid_training_record_what_they_spent_once_and_pushed(repos: Repos, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from controller.engine.registry.ledger import Ledger, entry_from_json
    from tests.training.standin import installed

    work, controller = ibm_cell(repos, tmp_path)
    with installed(seconds_per_job=1.5) as factory:
        ((observed, _),) = controller.observe().models
        controller.models.reconcile(observed)  # the model's own version (reps 1), billed too
        own = factory.calls
        with pytest.raises(training.TrainingStopped):  # Ctrl-C once the cell (reps 2) ran two jobs
            controller.pipelines.reconcile(
                controller.observe().pipelines[0][0], should_stop=lambda: factory.calls >= own + 2
            )
    before = factory.calls - own
    stopped = [e for e in ledger(work) if e["kind"] == "stopped"]
    assert len(stopped) == 1, "a cell that spent QPU time and stopped is in the ledger"
    assert stopped[0]["data"]["usage"]["qpuSeconds"] == 1.5 * before == 3.0
    run = next(e for e in ledger(work) if e["kind"] == "run-started")["data"]["pipeline"]["run"]
    for entry in stopped:
        about = entry["data"]["pipeline"]
        assert (about["name"], about["run"], about["step"]) == ("sweep", run, "sweep") and about["cell"]
        assert f"pipeline sweep run {run} step sweep cell" in entry["message"]
    remote = git(repos.remote, "show", "main:registry/demo/tiny/ledger.jsonl")
    assert remote.count('"kind":"stopped"') == len(stopped), "pushed before the controller stopped"
    bodies = git(repos.remote, "log", "--format=%B", "main", "-n", str(len(stopped)))
    assert bodies.count("Qmlops-Pipeline: demo/sweep") == len(stopped) and f"Qmlops-Run: {run}" in bodies

    def spent() -> float:
        entries = tuple(entry_from_json(e, n) for n, e in enumerate(ledger(work), start=1))
        return Ledger(entries).qpu_seconds(datetime.now(UTC))

    assert spent() == 1.5 * (own + before)  # counted now against qpuBudgetSeconds, not only once the cells end
    with installed(seconds_per_job=1.5) as factory:  # resumed: each cell from its checkpoint
        outcome = controller.pipelines.reconcile(controller.observe().pipelines[0][0])
    assert outcome.runs[-1].phase == "Succeeded"
    assert [e["kind"] for e in ledger(work)].count("registered") == 2
    assert spent() == 1.5 * (own + before + factory.calls)  # each second counted once across the resume


def test_a_cell_that_fails_after_spending_qpu_time_records_it_against_the_budget(repos: Repos, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from qiskit_ibm_runtime.exceptions import RuntimeJobFailureError

    from controller.engine.registry.ledger import Ledger, entry_from_json
    from tests.training.standin import installed

    work, controller = ibm_cell(repos, tmp_path)
    with installed(seconds_per_job=1.5) as factory:
        ((observed, _),) = controller.observe().models
        controller.models.reconcile(observed)  # the model's own version: billed too
        own = factory.calls
        factory.faults = {own + 3: RuntimeJobFailureError("Error code 1305; Job cancelled: instance limit")}
        outcome = controller.pipelines.reconcile(controller.observe().pipelines[0][0])
    assert outcome.runs[-1].phase == "Failed"
    [failed] = [e for e in ledger(work) if e["kind"] == "failed"]
    assert failed["data"]["usage"]["qpuSeconds"] == 3.0  # the cell's two jobs before the third failed
    about = failed["data"]["pipeline"]
    assert (about["name"], about["step"], about["run"]) == ("sweep", "sweep", outcome.runs[-1].id) and about["cell"]
    entries = tuple(entry_from_json(e, n) for n, e in enumerate(ledger(work), start=1))
    assert Ledger(entries).qpu_seconds(datetime.now(UTC)) == 1.5 * own + 3.0
    assert kinds(work)[-2:] == ["step-failed", "run-finished"]


def test_a_reconcile_whose_caller_just_synced_fetches_no_more(repos: Repos, tmp_path: Path) -> None:
    from controller.engine.reconcile import TrainingDue

    controller = Controller(seeded(repos), tmp_path)
    seen = controller.observe().pipelines[0][0]  # the registry synced, the revision read after it
    ran: list[str] = []
    real = controller.registry.git.run

    def run(*args: str, **kwargs: object) -> object:
        ran.append(args[0])
        return real(*args, **kwargs)  # type: ignore[arg-type]

    controller.registry.git.run = run  # type: ignore[method-assign]
    with pytest.raises(TrainingDue):  # unlicensed: the run's start is recorded, its cells wait
        controller.pipelines.reconcile(seen, may_train=False, synced=True)
    assert "fetch" not in ran, ran
    assert kinds(controller.registry.repo) == ["run-started"]
    ran.clear()
    with pytest.raises(TrainingDue):
        controller.pipelines.reconcile(seen, may_train=False)
    assert "fetch" in ran, "a caller that did not sync: the reconcile brings the registry up to date itself"


def test_each_cells_spec_is_built_once_per_model_spec(
    repos: Repos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from controller.engine.pipelines.cells import Cell

    built: list[str] = []
    real = Cell.apply

    def apply(cell: Cell, spec: dict[str, object]) -> dict[str, object]:
        built.append(cell.label)
        return real(cell, spec)

    monkeypatch.setattr(Cell, "apply", apply)
    controller = Controller(seeded(repos), tmp_path)
    seen = controller.observe().pipelines[0][0]
    first = controller.pipelines.plan(seen)
    assert sorted(built) == ["circuit.ansatz.reps=1", "circuit.ansatz.reps=2"]
    assert controller.pipelines.plan(seen) == first and len(built) == 2, "a second look builds no cell's spec again"
    model = seen.model.model  # type: ignore[union-attr]
    other = model.model_copy(update={"spec": model.spec.model_copy(update={"description": "changed"})})
    changed = dataclasses.replace(seen, model=dataclasses.replace(seen.model, model=other))  # type: ignore[type-var]
    controller.pipelines.plan(changed)
    assert len(built) == 4, "the model's spec changed: its cells are built again"
