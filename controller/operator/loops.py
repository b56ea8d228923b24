"""What a model's and a pipeline's reconcile loops share (``workers.ModelWorker``,
``pipelines.PipelineWorker``): each is an asyncio task of its own, started at the resource's first watch
event and woken by every later one; it may start a training only while the resource's training daemon
holds a licence (the daemon's stop flag: kopf keeps the finalizer for exactly as long as that daemon
runs); and a failed reconcile is tried again after the operator's backoff (``--retry-backoff``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import cast

import kopf

from controller.operator.runtime import Runtime


class LicensedLoop:
    """One resource's reconcile loop; ``run`` is the resource's own."""

    def __init__(self, runtime: Runtime, task_name: str) -> None:
        self.runtime = runtime
        self.task_name = task_name
        self.body = kopf.Body(cast(kopf.RawBody, {}))  # until the first event
        self.wake = asyncio.Event()
        self.failures = 0  # reconciles failed in a row
        self.retry_at: float | None = None
        self.last_failure: str | None = None  # the failure last announced by a Warning Event
        self.training_due = False  # the last reconcile stopped at a training it was not licensed to start
        self.licence: kopf.DaemonStopped | None = None  # the training daemon's stop flag, while it runs
        self.closed = False
        self._settled = asyncio.Event()  # no reconcile in flight
        self._settled.set()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def seen(self, body: kopf.Body) -> None:
        """A watch event brought the object as it is now."""
        self.body = body
        if self._task is None and not self.closed:
            self._task = asyncio.create_task(self.run(), name=self.task_name)
        self.wake.set()

    async def close(self) -> None:
        """Stop the loop: a training in flight stops before its next job (its checkpoint is kept)."""
        self.closed = True
        self.wake.set()
        if self._task is not None:
            await asyncio.shield(self._task)

    async def licensed(self, stopped: kopf.DaemonStopped) -> None:
        """The training daemon's life: trainings (a model's, a pipeline's cells and evaluations) may start
        until kopf stops it (the status no longer says Training or Running, the resource is deleted, or
        the operator exits); it returns once the reconcile in flight has returned."""
        self.licence = stopped
        self.wake.set()
        try:
            await stopped.wait()
        finally:
            if self.licence is stopped:
                self.licence = None
            await self._settled.wait()

    def _waiting_for_licence(self) -> bool:
        return self.training_due and self.licence is None

    @contextlib.contextmanager
    def _reconciling(self) -> Iterator[None]:
        """A reconcile in flight: the licence's end waits for it."""
        self._settled.clear()
        try:
            yield
        finally:
            self._settled.set()

    def _back_off(self) -> float:
        """One more failure in a row: the next try is due after the backoff for that many (its delay)."""
        delay = self._retry_after(self.failures)
        self.failures += 1
        return delay

    def _retry_after(self, failures: int) -> float:
        """A try again due after the backoff for ``failures`` in a row; the delay."""
        delay = self._backoff(failures)
        self.retry_at = time.monotonic() + delay
        return delay

    def _backoff(self, failures: int) -> float:
        """The delay after ``failures`` in a row (``--retry-backoff``, its last step repeated)."""
        backoff = self.runtime.config.retry_backoff
        return backoff[min(failures, len(backoff) - 1)]

    def _recovered(self) -> None:
        """A reconcile went through: no failure in a row, no retry due, none announced."""
        self.failures, self.retry_at, self.last_failure = 0, None, None
