"""The executor seam: a training that runs elsewhere (as the operator's Jobs do) stops the reconcile at
"running" with where it runs in status, writes nothing, and is registered exactly once by the
reconcile that finds it finished, as an in-process training would be."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path
from typing import Any

import pytest

from controller.api.quantummodel import Phase
from controller.engine import training
from controller.engine.decisions import LedgerKind
from controller.engine.reconcile import Reconciler
from controller.engine.reconcile.executor import EvaluationRequest, InProcess, Running, TrainingRequest
from controller.engine.registry import Registry
from tests.registry.repos import Repos
from tests.registry.test_loop import reconcile_all, seeded

pytestmark = pytest.mark.slow
# one long-lived thread: Qiskit's native allocator has crashed on threads started after others ended
_ELSEWHERE = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="elsewhere")


class Elsewhere:
    """Trains on a thread of its own, the way a Job trains in its own pod: the first call starts it,
    later calls answer Running until it has finished, then the artifact. Trainings begin only once
    :meth:`join` lets them (so that "still running" is not a race)."""

    elsewhere = True

    def __init__(self) -> None:
        self.started: list[str] = []
        self.most_at_once = 0
        self.go = threading.Event()
        self.runs: dict[str, concurrent.futures.Future[Any]] = {}
        self.evaluated: list[str] = []  # the evaluation keys, in the order they were started
        self.scoring: dict[str, concurrent.futures.Future[dict[str, Any]]] = {}

    def running(self) -> int:
        return sum(1 for run in self.runs.values() if not run.done())

    def train(self, request: TrainingRequest) -> bytes | Running | None:
        key = request.due.key
        run = self.runs.get(key)
        if run is not None and run.done():
            return run.result()
        if run is None and not request.start:
            return None
        if run is None:
            self.started.append(key)
            spec, folder = request.spec, request.checkpoint_dir
            go = self.go

            def run() -> bytes:
                go.wait()
                return bytes(training.train(spec, checkpoint_dir=folder).to_json())

            self.runs[key] = _ELSEWHERE.submit(run)
            self.most_at_once = max(self.most_at_once, self.running())
        return Running(f"elsewhere-{key[:12]}", "training elsewhere")

    def evaluate(self, request: EvaluationRequest) -> dict[str, Any] | Running | None:
        """As :meth:`train`: the first call starts the evaluation on the thread, later ones answer
        Running until it has finished, then its JSON."""
        run = self.scoring.get(request.key)
        if run is not None and run.done():
            return run.result()
        if run is None and not request.start:
            return None
        if run is None:
            self.evaluated.append(request.key)
            go = self.go

            def score() -> dict[str, Any]:
                go.wait()
                return dict(InProcess(training.train).evaluate(request) or {})

            self.scoring[request.key] = run = _ELSEWHERE.submit(score)
            self.runs[f"evaluation-{request.key}"] = run
            self.most_at_once = max(self.most_at_once, self.running())
        return Running(f"elsewhere-{request.key[:12]}", "evaluating elsewhere")

    def join(self) -> None:
        self.go.set()
        concurrent.futures.wait(self.runs.values())
        self.go = threading.Event()


def test_a_training_running_elsewhere_is_shown_then_registered_once(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    executor = Elsewhere()
    rec = Reconciler(Registry(work), checkpoint_root=tmp_path / "ckpt", executor=executor)

    (running,) = reconcile_all(rec)
    assert running.status.phase is Phase.TRAINING
    assert (
        running.status.training is not None and running.status.training.job == f"elsewhere-{executor.started[0][:12]}"
    )
    assert running.decisions == [] and not (work / "registry" / "demo" / "tiny" / "ledger.jsonl").exists()

    (still,) = reconcile_all(rec)  # asked again before it has finished: nothing new is started
    assert still.status.phase is Phase.TRAINING and len(executor.started) == 1

    executor.join()
    (done,) = reconcile_all(rec)
    assert [d.kind for d in done.decisions][:1] == [LedgerKind.REGISTERED]
    assert done.status.phase is Phase.READY and done.status.champion is not None
    (after,) = reconcile_all(rec)
    assert after.decisions == [] and len(executor.started) == 1
