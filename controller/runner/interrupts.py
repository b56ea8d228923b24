"""Ctrl-C for the local shells (`qmlops run`, `qmlops train`): the first one asks the training to stop
after its current iteration, so that the checkpoint is whole and the next run resumes; a second one
quits at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from rich.console import Console


@contextmanager
def stop_after_iteration(stop: threading.Event, console: Console) -> Iterator[None]:
    """While inside, SIGINT sets ``stop`` (the first time) or raises KeyboardInterrupt (the second).
    Outside the main thread signals cannot be handled: nothing changes there."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        console.print(
            "stopping after the current iteration (Ctrl-C again to quit now)", style="yellow", highlight=False
        )

    before = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
