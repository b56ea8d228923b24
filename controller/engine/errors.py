"""How the engine's errors tell the shells what to do next.

- :class:`RetryableError`: the world may fix it (a push rejected, a remote down, a training that is
  due but not this process's to run): the shells reconcile again (the operator after its backoff, the
  runner on its next pass).
- :class:`StallingError`: nothing changes until a person changes the input (a ledger that does not
  chain, a version file that was rewritten): the shells report it with the ``Stalled`` condition.

- :class:`WaitingError`: retryable, and more: work that runs elsewhere (a Job) waits for something
  outside it and its input (its image cannot be pulled); it has not failed and records nothing, it
  goes on by itself once that is fixed, and the shells say which piece waits and why
  (:class:`WaitReason`, a condition's and an Event's reason).

Today: ``GitError`` (a push, a fetch) and ``TrainingDue`` are retryable; ``TrainingError`` (bad data, a
circuit that does not fit, a budget, a Runtime refusal) and ``VersionError`` (a version file that
does not match its digest) stall. The shells behave as before (the operator retries any failure after
its backoff and shows Failed with ``Stalled``; the runner reports it and tries again on its next
pass); a QuantumPipeline step's ``retries`` retry only what does not stall (``stalls``).
"""

from __future__ import annotations

from enum import StrEnum


class RetryableError(Exception):
    """Reconciling again may succeed without any change to the input."""


class WaitReason(StrEnum):
    """Why work that runs elsewhere waits without having failed."""

    IMAGE = "WaitingForImage"  # its Job's pod cannot pull its image (ErrImagePull, ImagePullBackOff)


class WaitingError(RetryableError):
    """Work that runs elsewhere waits for something outside it (``reason``); its message says so in the
    executor's words (never in a pod's)."""

    reason: WaitReason = WaitReason.IMAGE


class StallingError(Exception):
    """Reconciling again cannot succeed until the input changes."""


def stalls(err: BaseException) -> bool:
    """Whether ``err`` needs a change to the input before a reconcile can succeed."""
    return isinstance(err, StallingError)
