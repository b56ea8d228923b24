"""``qmlops train``: train the QuantumModels of one spec file on their declared backends, here.

What a team runs on a laptop before opening a pull request: the spec is checked exactly as ``qmlops
validate`` checks it (same problems, same exit codes), then each QuantumModel in the file is trained
with the engine and its artifact written to ``<output>/<namespace>/<name>/artifact.json``.

Resumable: the checkpoint lives beside the artifact (``<output>/<namespace>/<name>/checkpoint``, or
under ``--checkpoint``). The first Ctrl-C stops after the current iteration and keeps it (exit 130);
running the same command again replays the journaled jobs without paying for them and goes on. A
finished training's checkpoint is kept too, so a re-run of an unchanged spec costs no job at all;
``--fresh`` starts over. Nothing here loads Qiskit until a spec has passed validation.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from controller.api import QuantumModel
from controller.cli.refusal import refuse
from controller.engine.registry.yamlio import write_atomic
from controller.engine.text import escape_control
from controller.engine.validation import EXIT_OK, EXIT_VIOLATIONS, validate_paths
from controller.engine.validation import repo_root_of as _repo_root_of
from controller.runner.interrupts import stop_after_iteration

if TYPE_CHECKING:
    from controller.engine.training import ModelArtifact
    from controller.engine.training import Progress as TrainingProgress

EXIT_INTERRUPTED = 130
DEFAULT_OUTPUT = "out"
LOG_EVERY = 5.0  # seconds between two progress lines when not on a terminal
METRICS = ("accuracy", "precision", "recall", "f1", "loss")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the QuantumModels of a spec file on their backends, here (resumable)",
        description=(
            "Validate FILE as `qmlops validate` does, then train each QuantumModel in it on its declared backend "
            "and write the trained model to OUTPUT/<namespace>/<name>/artifact.json. Ctrl-C stops after the "
            "current iteration and keeps the checkpoint; the same command resumes. ibm: backends read the "
            "credentialsSecret from $QMLOPS_CREDENTIALS_DIR/<namespace>/<secret>/ or $QMLOPS_IBM_TOKEN. "
            "Exit 0 trained, 1 spec violations or a failed training, 2 unusable input, 130 stopped."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="a spec file holding one or more QuantumModels")
    parser.add_argument(
        "--output", "-o", default=DEFAULT_OUTPUT, metavar="DIR", help=f"where artifacts go (default: {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="keep checkpoints under DIR/<namespace>/<name> (default: OUTPUT/<namespace>/<name>/checkpoint)",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="discard any checkpoint of these models and train from the start"
    )
    parser.set_defaults(handler=run)


# --- where things go ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    folder: Path
    checkpoint: Path

    @property
    def artifact(self) -> Path:
        return self.folder / "artifact.json"


def paths_for(model: QuantumModel, output: Path, checkpoint_root: Path | None) -> Paths:
    namespace, name = model.metadata.namespace, model.metadata.name
    folder = output / namespace / name
    checkpoint = checkpoint_root / namespace / name if checkpoint_root is not None else folder / "checkpoint"
    return Paths(folder, checkpoint)


# --- the command --------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    file = str(args.file)
    if Path(file).is_dir():
        return refuse("train", f"{file} is a folder: name one spec file")
    try:
        report = validate_paths([file])
    except Exception as err:  # the last resort: the command must never end in a traceback
        return refuse("train", f"internal error: {type(err).__name__}: {err}")
    for problem in report.problems:
        print(escape_control(problem.format()), file=sys.stderr)
    if report.exit_code != EXIT_OK:
        errors, _ = report.counts()
        print(f"qmlops train: {file}: {errors} error(s); nothing was trained", file=sys.stderr)
        return report.exit_code
    models = [r.resource for r in report.resources if isinstance(r.resource, QuantumModel)]
    skipped = len(report.resources) - len(models)
    if not models:
        return refuse("train", f"{file}: no QuantumModel to train")
    if skipped:
        print(
            f"qmlops train: {file}: {skipped} QuantumPipeline(s) skipped: train trains QuantumModels", file=sys.stderr
        )
    output = Path(args.output)
    checkpoint_root = Path(args.checkpoint) if args.checkpoint else None
    repo_root = Path(_repo_root_of(file))
    trainer = Trainer(console=_console(), stop=threading.Event())
    code = EXIT_OK
    with trainer.interrupts():
        for model in models:
            where = paths_for(model, output, checkpoint_root)
            if args.fresh and where.checkpoint.exists():
                shutil.rmtree(where.checkpoint)
            result = trainer.train(model, repo_root, where)
            code = max(code, result)
            if result == EXIT_INTERRUPTED:
                break
    return code


def _console() -> Console:
    console = Console(stderr=True)
    return console if console.is_terminal else Console(stderr=True, width=160)


class Trainer:
    """Trains one model after another, showing progress and reporting each outcome in one place."""

    def __init__(self, console: Console, stop: threading.Event) -> None:
        self.console = console
        self.stop = stop

    def train(self, model: QuantumModel, repo_root: Path, where: Paths) -> int:
        from controller.engine import training

        spec = model.spec
        key = f"{model.metadata.namespace}/{model.metadata.name}"
        credentials = None
        secret = spec.training.credentials_secret
        if secret:
            namespace = model.metadata.namespace
            # read only when a backend asks for them (ibm:), and again after a 401
            credentials = lambda: training.local_credentials(namespace, secret)  # noqa: E731
        where.folder.mkdir(parents=True, exist_ok=True)
        self.console.print(
            f"{key}: training on {spec.training.backend} "
            f"({spec.training.optimizer.kind.value}, {spec.training.optimizer.max_iterations} iterations)",
            highlight=False,
        )
        started = time.perf_counter()
        with Bar(self.console, key, spec.training.optimizer.max_iterations) as bar:
            try:
                artifact = training.train(
                    spec,
                    repo_root=repo_root,
                    checkpoint_dir=where.checkpoint,
                    credentials=credentials,
                    budget_used_seconds=0.0,
                    on_progress=bar.update,
                    should_stop=self.stop.is_set,
                )
            except training.TrainingStopped as err:
                bar.stopped = True
                failure: tuple[int, str] | None = (EXIT_INTERRUPTED, f"{key}: {err}")
            except training.TrainingError as err:
                failure = (EXIT_VIOLATIONS, f"qmlops train: {key}: {_one_line(str(err))}")
            except KeyboardInterrupt:
                raise
            except Exception as err:  # Qiskit or the OS: still one line, never a traceback
                failure = (EXIT_VIOLATIONS, f"qmlops train: {key}: training failed: {_failure(err)}")
            else:
                failure = None
        if failure is not None:
            code, message = failure
            self.console.print(escape_control(message), markup=False, highlight=False, soft_wrap=True)
            if code == EXIT_INTERRUPTED:
                self.console.print(
                    f"{key}: checkpoint kept in {where.checkpoint}; run the same command again to resume",
                    markup=False,
                    highlight=False,
                    soft_wrap=True,
                )
            return code
        write_atomic(where.artifact, artifact.to_json())
        report(artifact, where, key, time.perf_counter() - started, replayed_all=bar.first_live is None)
        return EXIT_OK

    def interrupts(self) -> AbstractContextManager[None]:
        return stop_after_iteration(self.stop, self.console)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _failure(err: BaseException) -> str:
    from controller.engine.status import describe_failure

    return describe_failure(err)


# --- progress -----------------------------------------------------------------------------------------


class Bar:
    """A rich progress bar on a terminal (iteration/max, loss, jobs, QPU seconds); elsewhere (CI, pipes)
    a plain line for the first iteration, then at most one every ``LOG_EVERY`` seconds, and the last."""

    def __init__(self, console: Console, key: str, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.console, self.key, self.total, self.clock = console, key, total, clock
        self.progress: Progress | None = None
        self.task: Any = None
        self.last: TrainingProgress | None = None
        self.logged_at: float | None = None
        self.logged_iteration = 0
        self.first_live: int | None = None
        self.stopped = False

    def __enter__(self) -> Bar:
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("jobs {task.fields[jobs]}"),
                TextColumn("QPU {task.fields[qpu]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(self.key, total=self.total, loss="-", jobs=0, qpu="0.0 s")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
            self.progress = None
        elif self.last is not None and self.last.iteration != self.logged_iteration:
            self._line(self.last)

    def update(self, progress: TrainingProgress) -> None:
        self.last = progress
        if self.first_live is None:
            self.first_live = progress.iteration
            if progress.iteration > 1:
                self.console.print(
                    f"{self.key}: resumed from the checkpoint at iteration {progress.iteration - 1} "
                    f"(run {progress.run}, started {progress.started})",
                    highlight=False,
                )
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=progress.iteration,
                loss=_loss(progress.loss),
                jobs=progress.jobs,
                qpu=f"{progress.qpu_seconds:.1f} s",
            )
            return
        now = self.clock()
        if self.logged_at is None or now - self.logged_at >= LOG_EVERY or progress.iteration >= progress.max_iterations:
            self.logged_at = now
            self._line(progress)

    def _line(self, progress: TrainingProgress) -> None:
        self.logged_iteration = progress.iteration
        session = f"  session {progress.session_id}" if progress.session_id else ""
        self.console.print(
            f"{self.key}: iteration {progress.iteration}/{progress.max_iterations}  loss {_loss(progress.loss)}  "
            f"jobs {progress.jobs}  shots {progress.shots}  QPU {progress.qpu_seconds:.1f} s  "
            f"{progress.wall_seconds:.1f} s{session}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _loss(value: float) -> str:
    return f"{value:.4f}" if math.isfinite(value) else "-"


# --- the result ---------------------------------------------------------------------------------------


def report(artifact: ModelArtifact, where: Paths, key: str, seconds: float, replayed_all: bool = False) -> None:
    """Where the artifact is, its test metrics and what it cost, on stdout."""
    usage = artifact.manifest.get("usage") or {}
    metrics = artifact.metrics
    lineage = artifact.manifest.get("lineage") or {}
    dataset = lineage.get("dataset") or {}
    print(f"{key}: artifact {where.artifact} ({artifact.digest})")
    shown = "  ".join(f"{m} {metrics[m]:.4f}" for m in METRICS if isinstance(metrics.get(m), int | float))
    print(f"{key}: test metrics ({dataset.get('testRows', '?')} rows): {shown}")
    matrix = metrics.get("confusionMatrix")
    if matrix:
        classes = ", ".join(str(c) for c in artifact.classes)
        print(escape_control(f"{key}: confusion matrix (rows true, columns predicted; classes {classes}): {matrix}"))
    resumes = int(usage.get("resumes", 0) or 0)
    resumed = f"; resumed {resumes} time(s) from {where.checkpoint}" if resumes else ""
    if resumes and replayed_all:
        resumed = f"; every job replayed from {where.checkpoint}, none run (--fresh trains again)"
    print(
        f"{key}: {usage.get('iterations', '?')} iterations, {usage.get('primitiveJobs', '?')} primitive jobs, "
        f"{usage.get('shots', 0)} shots, {float(usage.get('qpuSeconds', 0.0)):.1f} QPU seconds on "
        f"{lineage.get('device', lineage.get('backend', '?'))}; {seconds:.1f} s here{resumed}"
    )
