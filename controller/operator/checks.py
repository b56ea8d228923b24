"""Spec checks off kopf's event loop, each within a time budget, at most ``CHECK_THREADS`` at once.

Reading a spec is the engine's validation: pydantic, governance, and for an OpenQASM ansatz a scan
and Qiskit's importer. ``controller.api.qasm`` bounds that work (about a second at worst), but it is
still work the event loop must not wait for, and a budget still guards it:

- the webhook's review, a reconcile's reading of its model and a pipeline's review each run on this
  module's small pool of threads, never on the loop;
- each waits for at most its budget: the webhook then denies with "validation did not finish within
  Ns" (an answer before the apiserver's ``timeoutSeconds`` in ``deploy/webhook.yaml``: failing
  closed, never open), a reconcile fails and is retried with the usual backoff;
- a check that has not started when its budget runs out is cancelled and never starts. A thread cannot
  be stopped from outside, so a check that has started finishes alone; there are never more than
  ``CHECK_THREADS`` of them, whatever is applied, and what they run is bounded by the limits of the
  spec's own checks (file sizes, YAML nodes, the OpenQASM limits).

The threads live as long as the process, like the reconcile pool's (see ``runtime.py``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

CHECK_THREADS = 2
# The apiserver waits deploy/webhook.yaml's timeoutSeconds (10) for an answer: the review answers first.
WEBHOOK_BUDGET_SECONDS = 8.0
# A reconcile's reading of its model and a pipeline's review, retried when they do not finish.
RECONCILE_BUDGET_SECONDS = 30.0


class CheckTimedOut(Exception):
    """A check that did not finish within its budget."""


def timed_out_message(budget: float) -> str:
    return f"validation did not finish within {budget:g}s"


class Checks:
    def __init__(self, threads: int = CHECK_THREADS) -> None:
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="qmlops-check")

    async def run(self, fn: Callable[[], T], budget: float) -> T:
        """``fn()`` on a check thread, or :class:`CheckTimedOut` once ``budget`` seconds have passed."""
        future = self.pool.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), budget)
        except TimeoutError:
            future.cancel()  # one still waiting for a thread never starts
            raise CheckTimedOut(timed_out_message(budget)) from None


_CHECKS: Checks | None = None
_LOCK = threading.Lock()


def checks() -> Checks:
    """The process's checks, made on first use and never shut down."""
    global _CHECKS
    with _LOCK:
        if _CHECKS is None:
            _CHECKS = Checks()
        return _CHECKS


async def run(fn: Callable[[], T], budget: float) -> T:
    return await checks().run(fn, budget)
