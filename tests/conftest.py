"""The test process is a long-lived shell too: it loads Qiskit on its main thread before any test
trains on a worker thread, as ``qmlops run``, ``operator``, ``serve`` and ``monitor`` do
(controller/shells/threads.py: Qiskit 2.6 crashes once the thread that first loaded it has exited)."""

from controller.shells.threads import load_qiskit_on_main_thread

load_qiskit_on_main_thread()
