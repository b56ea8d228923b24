"""The fake devices that ``fake:<device>`` names, read from qiskit-ibm-runtime's snapshot files.

``qiskit_ibm_runtime.fake_provider`` keeps one folder per device (``backends/manila/conf_manila.json``
and its properties). Validation needs only the names and, for the qubit limit, a device's qubit count:
both are in those files, so they are read as data without importing qiskit-ibm-runtime, which costs
over a second (Qiskit, SciPy, the IBM Cloud SDK) on every ``qmlops validate``. Training imports it
when it builds the backend. Should a release move the snapshots, the names are taken from the
imported module instead (slow, never wrong).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path

PACKAGE = "qiskit_ibm_runtime"
# Backends in fake_provider that are not snapshots of a device.
NOT_DEVICES = frozenset({"fractional"})


@functools.cache
def snapshot_folder() -> Path | None:
    """``fake_provider/backends`` of the installed qiskit-ibm-runtime, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "fake_provider" / "backends"
        if folder.is_dir():
            return folder
    return None


def _configuration(folder: Path, device: str) -> Path:
    return folder / device / f"conf_{device}.json"


@functools.cache
def fake_devices() -> tuple[str, ...]:
    """Device names that qiskit_ibm_runtime.fake_provider carries snapshots of (``manila``, ``kyiv`` ...)."""
    folder = snapshot_folder()
    if folder is not None:
        names = {
            entry.name
            for entry in folder.iterdir()
            if entry.name not in NOT_DEVICES and _configuration(folder, entry.name).is_file()
        }
        if names:
            return tuple(sorted(names))
    return _imported_fake_devices()


def _imported_fake_devices() -> tuple[str, ...]:
    from qiskit_ibm_runtime import fake_provider

    names = set()
    for attr in dir(fake_provider):
        if attr.startswith("Fake") and attr not in ("FakeProviderForBackendV2", "FakeFractionalBackend"):
            base = attr.removeprefix("Fake").removesuffix("V2")
            if base and not base.startswith("Provider"):
                names.add(base.lower())
    return tuple(sorted(names))


@functools.cache
def fake_device_qubits(device: str) -> int | None:
    """The qubit count of fake device ``device`` (``n_qubits`` of its snapshot), None when it has no snapshot
    file to read. Reads one JSON file of the installed package (at most a few hundred KB)."""
    folder = snapshot_folder()
    if folder is None or device not in fake_devices():
        return None
    try:
        configuration = json.loads(_configuration(folder, device).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    qubits = configuration.get("n_qubits") if isinstance(configuration, dict) else None
    return qubits if isinstance(qubits, int) and not isinstance(qubits, bool) and qubits > 0 else None
