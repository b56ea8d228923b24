"""What a training can end with besides an artifact. Messages name the spec field to change and never
quote a credential."""

from __future__ import annotations

from controller.engine.errors import StallingError


class TrainingError(StallingError):
    """A training that cannot go on: bad data, a circuit that does not fit, a Runtime error that is
    the user's to fix. The message is the whole explanation; no traceback is needed. ``usage``: what
    the jobs that did run spent (primitiveJobs, shots, qpuSeconds), for the ledger's budget."""

    usage: dict[str, float] | None = None


class DatasetError(TrainingError):
    """The dataset cannot be prepared (missing column, non-numeric feature, one class only...)."""


class CircuitError(TrainingError):
    """The circuit cannot be built from the spec."""


class BudgetExceeded(TrainingError):
    """The next job would break governance.qpuBudgetSeconds or governance.maxShots: it is not started."""


class LimitExceeded(TrainingError):
    """The training asks more of the machine than its limits allow (a simulation's memory, a device's
    qubits, the shots of the whole training: controller/api/limits.py); nothing is started."""


class TrainingTimedOut(TrainingError):
    """The training ran for training.timeout (wall-clock, summed over its resumes) and stopped before
    its next job. Unlike :class:`TrainingStopped` it is a failure of that training: it is recorded, and
    the training is not started again until its spec (its timeout included) changes."""


class RuntimeFailure(TrainingError):
    """Qiskit Runtime refused or failed the work for a reason retrying does not fix."""


class ArtifactError(ValueError):
    """A model artifact that cannot be loaded: too large, not JSON, not an artifact, digest mismatch."""


class TrainingStopped(Exception):
    """The caller asked the training to stop (``should_stop``): the checkpoint after the last finished
    iteration is kept, and the next training of the same spec resumes from it. Shells tell it apart
    from failures: it is never recorded as a failed training. ``usage``: what its jobs spent so far
    (cumulative over its resumes), recorded in a ``stopped`` ledger entry."""

    usage: dict[str, float] | None = None
