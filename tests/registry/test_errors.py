"""The engine's errors say whether reconciling again can help: transient trouble is retryable, input
that must change stalls."""

from __future__ import annotations

from controller.engine.errors import RetryableError, StallingError, stalls
from controller.engine.reconcile import TrainingDue
from controller.engine.registry.git import GitError
from controller.engine.registry.versions import VersionError
from controller.engine.training.errors import BudgetExceeded, DatasetError, TrainingStopped


def test_input_that_must_change_stalls() -> None:
    for err in (DatasetError("column x is missing"), BudgetExceeded("over budget"), VersionError("rewritten")):
        assert stalls(err) and isinstance(err, StallingError), err


def test_transient_trouble_is_retried() -> None:
    for err in (GitError("git push: rejected"), TrainingDue("no version yet")):
        assert not stalls(err) and isinstance(err, RetryableError), err
    assert not stalls(TrainingStopped()), "a stopped training resumes: it is neither"
    assert not stalls(RuntimeError("anything else")), "unknown errors are retried, as the shells always did"
