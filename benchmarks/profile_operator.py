"""Run ``qmlops`` with every thread profiled (cProfile), for finding where the operator spends CPU.

    .venv/bin/python benchmarks/profile_operator.py OUT.pstats operator --repo ... (qmlops's arguments)

``python -m cProfile`` sees the main thread only; the operator reconciles on a pool of threads. Here
each thread (the main one, and every thread started after) gets its own ``cProfile.Profile``, timed by
the thread's own CPU (``time.thread_time``: waiting costs nothing; git's child processes are not
seen, only the calls that start them); at exit
(SIGTERM included: the operator stops cleanly) they are merged into ``OUT.pstats``. Read it with
``python -c "import pstats; pstats.Stats('OUT.pstats').sort_stats('cumulative').print_stats(40)"``.
``benchmarks/operator_jobs.py --profile DIR`` starts its operators through this, and sends each
SIGUSR1 when its measured window opens: every profile gathered so far (the imports, the start) is
cleared then, so that the file holds the window only.
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import signal
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

profiles: list[cProfile.Profile] = []
lock = threading.Lock()


def _thread_start(*_: object) -> None:
    """Called once in each new thread before its target runs: it gets a profiler of its own."""
    profile = cProfile.Profile(time.thread_time)
    with lock:
        profiles.append(profile)
    profile.enable()  # replaces this hook in the thread


def _dump(out: str) -> None:
    with lock:
        taken = list(profiles)
    for profile in taken:
        profile.disable()  # only stops the calling thread's; the others' counts are what they are
    stats = None
    for profile in taken:
        try:
            stats = pstats.Stats(profile) if stats is None else stats.add(profile)
        except TypeError:  # a thread that never ran Python code
            continue
    if stats is not None:
        stats.dump_stats(out)


def _clear(*_: object) -> None:
    """SIGUSR1: forget what was counted so far, in every thread's profile."""
    with lock:
        for profile in profiles:
            profile.clear()


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    signal.signal(signal.SIGUSR1, _clear)
    threading.setprofile(_thread_start)
    main_profile = cProfile.Profile(time.thread_time)
    profiles.append(main_profile)
    atexit.register(_dump, out)
    from controller.cli.main import main as qmlops

    main_profile.enable()
    return qmlops(argv)


if __name__ == "__main__":
    raise SystemExit(main())
