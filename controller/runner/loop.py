"""The local runner: ``qmlops run``. Polls a spec repository (pulling from its remote when it has one),
reconciles every committed QuantumModel, then every QuantumPipeline, with the engine, and shows a live
table.

Ctrl-C is safe: the first one stops the training after its current iteration (the checkpoint is kept,
the next run resumes), a second one quits at once. Either way nothing half-written is committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console

from controller.api.quantummodel import Phase, QuantumModelStatus
from controller.api.quantumpipeline import RunPhase
from controller.api.quantumpolicy import QuantumPolicy
from controller.engine.pipelines.cells import cells_of
from controller.engine.pipelines.runs import Run
from controller.engine.reconcile import Outcome, Reconciler, TrainerFn, training, utcnow
from controller.engine.reconcile.pipeline import ObservedPipeline, PipelineReconciler
from controller.engine.registry import GitError, GitIdentity, Registry, RegistryError
from controller.engine.registry.ledger import format_time
from controller.engine.registry.trust import Trust
from controller.engine.status import describe_failure
from controller.runner.display import Board
from controller.runner.interrupts import stop_after_iteration
from controller.runner.specs import observe
from controller.shells.live import ServingEndpoint

T = TypeVar("T")
EXIT_OK, EXIT_PROBLEMS, EXIT_UNUSABLE, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass(frozen=True)
class RunnerConfig:
    repo: Path
    specs: Path
    identity: GitIdentity
    interval: float = 30.0
    once: bool = False
    remote: str | None = "origin"
    requested: tuple[str, ...] = ()  # pipelines (namespace/name) to run now, whatever their triggers
    trust: Trust | None = None  # the allowed signers the registry's history must verify against
    signing_key: Path | None = None  # the SSH key every commit is signed with
    policies: tuple[QuantumPolicy, ...] = ()  # QuantumPolicy floors (--policies DIR)
    serving_url: str | None = None  # the qmlops serve server monitoring's live check reads (--serving-url)


class Runner:
    def __init__(
        self,
        config: RunnerConfig,
        *,
        console: Console | None = None,
        trainer: TrainerFn | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.console = console or _console()
        self.registry = Registry(
            config.repo,
            identity=config.identity,
            remote=config.remote,
            trust=config.trust,
            signing_key=config.signing_key,
        )
        checkpoints, credentials = self.registry.private_dir() / "checkpoints", _local_credentials(config.repo)
        self.reconciler = Reconciler(
            self.registry,
            trainer=trainer,
            clock=clock,
            checkpoint_root=checkpoints,
            credentials=credentials,
            policies=lambda: list(config.policies),
            live=ServingEndpoint.at(config.serving_url) if config.serving_url else None,
        )
        self.pipelines = PipelineReconciler(
            self.registry,
            trainer=trainer,
            clock=clock,
            checkpoint_root=checkpoints,
            credentials=credentials,
            policies=lambda: list(config.policies),
        )
        asked = format_time(clock())
        self.requested = {key: asked for key in config.requested}  # answered once: the run records it
        self.stop = threading.Event()
        self.previous: dict[str, QuantumModelStatus] = {}
        self._said: set[str] = set()

    # --- the loop -----------------------------------------------------------------------------------

    def run(self) -> int:
        code = EXIT_OK
        with self._interrupts(), Board(self.console) as board:
            while True:
                code = self.reconcile_all(board)
                if self.config.once or self.stop.is_set():
                    break
                if self.stop.wait(self.config.interval):
                    break
        if not board.interactive:
            board.print_table()
        if self.stop.is_set():
            self.console.print("stopped: checkpoints are kept; run again to resume", highlight=False)
            return EXIT_INTERRUPTED
        return code

    def reconcile_all(self, board: Board) -> int:
        """One pass over the repository; the exit code it would end ``--once`` with."""
        code = EXIT_OK
        try:
            self.registry.sync()
        except (GitError, RegistryError) as err:
            self._say_once(board, f"qmlops run: cannot sync with the remote: {err}")
            code = EXIT_PROBLEMS
        observation = observe(self.registry.git, self.config.specs, requested=self.requested)
        for problem in observation.problems:
            self._say_once(board, problem.format())
            code = EXIT_PROBLEMS
        for path in observation.uncommitted:
            self._say_once(
                board, f"{path}: has uncommitted changes; run reconciles what is committed, so it is skipped"
            )
        if not observation.models and not observation.problems:
            self._say_once(board, f"qmlops run: no QuantumModel under {self.config.specs}")
        found = {seen.key for seen, _ in observation.pipelines}
        for key in self.requested:
            if key not in found:
                self._say_once(
                    board, f"qmlops run: --pipeline {key}: no such QuantumPipeline under {self.config.specs}"
                )
                code = EXIT_PROBLEMS
        for observed, _ in observation.models:
            if self.stop.is_set():
                break
            key = f"{observed.model.metadata.namespace}/{observed.model.metadata.name}"
            board.row(key)
            outcome = self._reconcile_one(board, key, observed)
            if outcome is None:
                code = EXIT_PROBLEMS if not self.stop.is_set() else code
                continue
            if outcome.status.phase is Phase.FAILED:
                code = EXIT_PROBLEMS
        for seen, _ in observation.pipelines:
            if self.stop.is_set():
                break
            if not self._reconcile_pipeline(board, seen):
                code = EXIT_PROBLEMS if not self.stop.is_set() else code
        return code

    def _reconcile_pipeline(self, board: Board, seen: ObservedPipeline) -> bool:
        """One pipeline's reconcile; False when it failed or its latest run failed."""
        key = f"pipeline {seen.key}"
        board.row(key)

        def progress(update: Any) -> None:
            board.pipeline(key, "Running", f"cells training: iter {getattr(update, 'iteration', '?')}", "")

        outcome = self._guarded(
            board, key, lambda: self.pipelines.reconcile(seen, on_progress=progress, should_stop=self.stop.is_set)
        )
        if outcome is None:
            return False
        self._say_decisions(board, seen.key, outcome.decisions)
        run = outcome.runs[-1] if outcome.runs else None
        if run is None:
            board.pipeline(key, "Ready" if seen.model else "Pending", "", outcome.message)
            return seen.model is not None
        board.pipeline(key, run.phase.value, run_progress(seen, run), outcome.message or run.reason)
        return run.phase is not RunPhase.FAILED

    def _reconcile_one(self, board: Board, key: str, observed: Any) -> Outcome | None:
        previous = self.previous.get(key)
        observed = replace(observed, model=observed.model.model_copy(update={"status": previous}))
        backend = observed.model.spec.training.backend

        def progress(update: Any) -> None:
            iteration = getattr(update, "iteration", None)
            total = getattr(update, "max_iterations", None) or observed.model.spec.training.optimizer.max_iterations
            board.training(key, iteration, total, getattr(update, "loss", None), backend)

        outcome = self._guarded(
            board, key, lambda: self.reconciler.reconcile(observed, on_progress=progress, should_stop=self.stop.is_set)
        )
        if outcome is None:
            return None
        self.previous[key] = outcome.status
        self._say_decisions(board, key, outcome.decisions)
        board.status(key, outcome.status)
        return outcome

    def _guarded(self, board: Board, key: str, reconcile: Callable[[], T]) -> T | None:
        """One reconcile; None when it failed (said on the board) or was stopped (Ctrl-C: the checkpoints
        are kept and the runner stops). One model's or pipeline's failure never stops the others."""
        try:
            return reconcile()
        except Exception as err:
            if isinstance(err, training().TrainingStopped):
                board.failed(key, "stopped: the checkpoints are kept; run again to resume")
                self.stop.set()
                return None
            message = describe_failure(err)
            board.failed(key, message)
            self._say_once(board, f"{key}: {message}")
            return None

    @staticmethod
    def _say_decisions(board: Board, key: str, decisions: list[Any]) -> None:
        for decision in decisions:
            where = f" (commit {decision.commit[:12]})" if decision.commit else ""
            board.say(f"{key}: {decision.kind}: {decision.message}{where}")

    def _say_once(self, board: Board, text: str) -> None:
        if text not in self._said:
            self._said.add(text)
            board.say(text)

    # --- Ctrl-C ---------------------------------------------------------------------------------------

    def _interrupts(self) -> AbstractContextManager[None]:
        return stop_after_iteration(self.stop, self.console)


def _console() -> Console:
    """A terminal's own width; elsewhere (CI logs, pipes) wide enough that the table is not folded."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _local_credentials(repo: Path) -> Callable[[str, str], Any] | None:
    """The training engine's local lookup of a ``credentialsSecret`` (a file or environment variables)."""
    lookup = getattr(training(), "local_credentials", None)
    if lookup is None:
        return None

    def find(namespace: str, secret: str) -> Any:
        return lookup(namespace, secret)

    return find


def run_progress(seen: ObservedPipeline, run: Run) -> str:
    """``run-1a2b…: 4/6 cells, step noise``: where a run stands, for the live table."""
    steps = seen.pipeline.spec.steps
    total = sum(len(cells_of(s.train)) for s in steps if s.train)
    done = 0
    for step in steps:
        record = run.step(step.name)
        if step.train and record is not None:
            done += len(record.outputs.get("cells") or {})
    current = next((s.name for s in steps if run.step(s.name) is None), None)
    where = f", step {current}" if current and run.open else ""
    return f"{run.id}: {done}/{total} cells{where}"
