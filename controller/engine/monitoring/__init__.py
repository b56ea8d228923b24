"""Watching each champion on drifting hardware and data (QuantumModel ``spec.monitoring``).

:mod:`.sources` says where today's calibration of a device comes from, :mod:`.checks` runs the
calibration, replay and data checks, and :func:`monitor` checks the models of a repository now.
Plain typed Python: the CLI (``qmlops monitor``), the runner and the operator drive it.
"""

from controller.engine.monitoring.checks import Check, CheckKind, Report, Verdict
from controller.engine.monitoring.monitor import monitor, monitor_model
from controller.engine.monitoring.sources import CalibrationSource, SourceUnavailable

__all__ = [
    "CalibrationSource",
    "Check",
    "CheckKind",
    "Report",
    "SourceUnavailable",
    "Verdict",
    "monitor",
    "monitor_model",
]
