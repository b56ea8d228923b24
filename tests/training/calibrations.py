"""Calibration files for the tests: a fake device's packaged snapshot, refreshed or degraded, written
where a spec repository keeps it (``calibrations/<device>.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def packaged(device: str = "fake_manila") -> dict[str, Any]:
    """The snapshot qiskit-ibm-runtime ships for ``device`` (props_<device>.json), as JSON."""
    from controller.engine.training.backends import RuntimeFactory

    backend = RuntimeFactory().fake_backend(device.removeprefix("fake_"))
    data: dict[str, Any] = json.loads((Path(backend.dirname) / backend.props_filename).read_text())
    return data


def degraded(
    device: str = "fake_manila",
    *,
    factor: float = 3.0,
    qubits: list[int] | None = None,
    date: str = "2026-12-01T06:00:00+00:00",
) -> dict[str, Any]:
    """The packaged snapshot taken again on ``date``, with readout and gate errors multiplied by
    ``factor`` on ``qubits`` (all of them when None). ``factor=1`` is a refresh that changed nothing
    but its date."""
    data = packaged(device)
    data["last_update_date"] = date
    for q, entries in enumerate(data["qubits"]):
        for entry in entries:
            if entry["name"] == "readout_error" and (qubits is None or q in qubits):
                entry["value"] = min(1.0, entry["value"] * factor)
    for gate in data["gates"]:
        if qubits is None or set(gate["qubits"]) & set(qubits):
            for entry in gate["parameters"]:
                if entry["name"] == "gate_error":
                    entry["value"] = min(1.0, entry["value"] * factor)
    return data


def write(repo: Path, data: dict[str, Any], device: str = "fake_manila") -> Path:
    path = repo / "calibrations" / f"{device}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
