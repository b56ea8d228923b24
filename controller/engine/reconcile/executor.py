"""Where a training (or a pipeline's evaluation) runs: the executor that carries out a ``Train`` intent
and each scoring of an ``EvaluateVersions`` intent.

``actions.train`` hands every training (a model's own, a pipeline's cell) to the reconciler's
executor with a :class:`TrainingRequest`. The executor answers with the finished artifact (its JSON,
which ``actions.registration`` registers) or with :class:`Running`: the training goes on elsewhere
(a Kubernetes Job, say), the reconcile stops there with the training shown as running, and whoever
learns that it ended reconciles again, when the executor answers with the artifact. A failed
training raises, as the trainer does; a stopped one raises ``TrainingStopped`` with its ``usage`` (what
its jobs spent so far, cumulative over resumes), which the engine records as a ``stopped`` entry
(``actions.stopped``: for a model's own training and for a pipeline's cell alike).

:class:`InProcess` trains here, in this thread, with the reconciler's trainer: what ``qmlops run``
does and the operator's default. The operator's Jobs executor lives in the operator (the engine
imports no Kubernetes client).

A pipeline's ``evaluate`` step asks the same executor for each (version, backend) with an
:class:`EvaluationRequest`: the answer is the evaluation's JSON (``Evaluation.to_json()``, what the
step records as an ``evaluated`` entry), :class:`Running`, or None (not started, ``start`` false).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from controller.api.quantummodel import QuantumModelSpec
from controller.engine.errors import WaitReason
from controller.engine.reconcile.state import Due, training
from controller.engine.registry.canonical import digest_of


@dataclass(frozen=True)
class TrainingRequest:
    """One training, as its executor takes it: the model, the resolved spec, the training key (in
    ``due``), where its checkpoint is kept here, and what the trainer is given."""

    namespace: str
    name: str
    spec: QuantumModelSpec
    due: Due
    checkpoint_dir: Path
    repo_root: Path
    credentials: Callable[[], Any] | None
    budget_used_seconds: float
    on_progress: Callable[[Any], None] | None
    should_stop: Callable[[], bool] | None
    start: bool = True  # false: report on a training started before, start none (a pipeline's parallelism)
    owner: str = "model"  # whose training: the model's own, or a pipeline's cell ("pipeline")


@dataclass(frozen=True)
class EvaluationRequest:
    """One evaluation of a pipeline's ``evaluate`` step, as its executor takes it: the model, the
    version (its number, digest and artifact JSON), the resolved spec it is scored with, the backend
    and shots, the evaluation key (:func:`evaluation_key`), and what the evaluation is given."""

    namespace: str
    name: str
    version: int
    version_digest: str
    artifact: dict[str, Any]
    spec: QuantumModelSpec
    backend: str
    shots: int | None
    key: str
    repo_root: Path
    credentials: Callable[[], Any] | None
    budget_used_seconds: float
    start: bool = True  # false: report on an evaluation started before, start none


def evaluation_key(version_digest: str, backend: str, shots: int | None, run: str = "") -> str:
    """The key of one evaluation: what is scored (the version), where and with how many shots; the
    same evaluation has the same key whoever computes it (an operator restarted adopts its Job). On
    an ``ibm:`` device the run is part of it: a real device's figures are of that run's day, and a
    Job another run left behind is never taken for this run's (simulators give the same figures)."""
    parts = [version_digest, backend, "" if shots is None else str(shots)]
    if backend.startswith("ibm:"):
        parts.append(run)
    return digest_of(parts)[7:23]


@dataclass(frozen=True)
class Held:
    """Work that runs elsewhere and waits (a :class:`~controller.engine.errors.WaitingError`): what it
    is (a pipeline's cell, a version on a backend), why (the error's reason), the executor's message."""

    what: str
    reason: WaitReason
    message: str


@dataclass(frozen=True)
class Running:
    """The training runs elsewhere and has not finished: ``job`` names where (shown in status)."""

    job: str
    message: str


class Executor(Protocol):
    # whether trainings run elsewhere: ``train`` then returns at once, and a pipeline starts its cells
    # ``parallelism`` at a time by asking, rather than by threads that each wait for one
    elsewhere: bool

    def train(self, request: TrainingRequest) -> bytes | Running | None:
        """The finished artifact's JSON, or :class:`Running`, or None when ``request.start`` is false
        and the training was not started; raises when the training failed."""

    def evaluate(self, request: EvaluationRequest) -> dict[str, Any] | Running | None:
        """The finished evaluation's JSON, or :class:`Running`, or None when ``request.start`` is
        false and the evaluation was not started; raises when the evaluation failed."""


class InProcess:
    """Trains in the calling thread with ``trainer`` (``training.train``'s signature)."""

    elsewhere = False

    def __init__(self, trainer: Callable[..., Any]) -> None:
        self.trainer = trainer

    def train(self, request: TrainingRequest) -> bytes | Running | None:
        artifact = self.trainer(
            request.spec,
            repo_root=request.repo_root,
            checkpoint_dir=request.checkpoint_dir,
            credentials=request.credentials,
            budget_used_seconds=request.budget_used_seconds,
            on_progress=request.on_progress,
            should_stop=request.should_stop,
        )
        raw: bytes = artifact.to_json()
        return raw

    def evaluate(self, request: EvaluationRequest) -> dict[str, Any] | Running | None:
        result = training().evaluate(
            request.artifact,
            request.spec,
            request.backend,
            shots=request.shots,
            repo_root=request.repo_root,
            credentials=request.credentials,
            budget_used_seconds=request.budget_used_seconds,
        )
        found: dict[str, Any] = result.to_json()
        return found
