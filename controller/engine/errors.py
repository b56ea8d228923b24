"""How the engine's errors tell the shells what to do next.

- :class:`RetryableError`: the world may fix it (a push rejected, a remote down, a training that is
  due but not this process's to run): the shells reconcile again (the operator after its backoff, the
  runner on its next pass).
- :class:`StallingError`: nothing changes until a person changes the input (a ledger that does not
  chain, a version file that was rewritten): the shells report it with the ``Stalled`` condition.

Both shells keep retrying any other exception as they always have; these bases say which kind an
error is so that a shell can choose (``stalls``).
"""

from __future__ import annotations


class RetryableError(Exception):
    """Reconciling again may succeed without any change to the input."""


class StallingError(Exception):
    """Reconciling again cannot succeed until the input changes."""


def stalls(err: BaseException) -> bool:
    """Whether ``err`` needs a change to the input before a reconcile can succeed."""
    return isinstance(err, StallingError)
