"""Loading Qiskit on the main thread, before any worker thread may train, evaluate or predict.

Qiskit 2.6's compiled core (``qiskit._accelerate``) keeps state of the thread that first imports it:
once that thread has exited, the next circuit built on any thread crashes the whole process with a
segmentation fault (reproduced with ``QuantumCircuit(2).h(0)`` on a new one-thread pool after the
first pool was shut down). The shells train on threads that come and go (a pipeline step's cell pool,
a training worker, an HTTP request's thread), and an operator restarted in the middle of a pipeline
run would first import Qiskit on such a thread. So every long-lived command loads Qiskit here, on
the main thread, which lives as long as the process, before it starts any other thread.
"""

from __future__ import annotations


def load_qiskit_on_main_thread() -> None:
    """Import Qiskit's compiled core on the calling thread, which must be the main one unless Qiskit
    is loaded already (a command run in-process by a test, on the test's thread)."""
    import sys
    import threading

    if "qiskit" not in sys.modules and threading.current_thread() is not threading.main_thread():
        raise RuntimeError("Qiskit must first be loaded on the main thread")
    import qiskit  # noqa: F401  (the import is the point)
