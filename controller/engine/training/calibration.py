"""A device's calibration: where it comes from, what it says, and the estimated success probability
(ESP) of a transpiled circuit under it.

A calibration is a snapshot in qiskit-ibm-runtime's ``props_<device>.json`` format (``backend_name``,
``last_update_date``, per-qubit ``T1``/``T2``/``readout_error``, per-gate ``gate_error``). It comes from:

* ``fake:<device>``: the spec repository's ``calibrations/<device>.json`` when it exists (air-gapped
  sites and tests feed a refreshed calibration so), else the snapshot packaged with the fake backend;
* ``ibm:<backend>``: the service's current properties.

Its digest is taken over its canonical JSON, so the same calibration always has the same digest and the
snapshot can be kept content-addressed in the registry (``registry/calibrations/<device>/<digest>.json``).

The ESP of a circuit is the product of ``1 - error`` over its gates (each on its physical qubits) and
one measurement per measured qubit. A circuit's ``footprint`` (its gate counts per physical qubit
tuple, its measured qubits) is recorded in lineage, so the ESP can be recomputed from Git alone and
under any later calibration, without transpiling again.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from controller.engine.containment import OutsideWorkTree, inside_work_tree
from controller.engine.registry.canonical import digest_of, pretty_bytes
from controller.engine.training.errors import TrainingError

CALIBRATIONS_DIR = "calibrations"
MAX_CALIBRATION_BYTES = 8 * 1024 * 1024
MAX_QUBITS = 1024
MAX_GATES = 50_000
NON_GATES = frozenset({"barrier", "delay", "measure", "reset"})
PROBABILITIES = frozenset({"readout_error", "prob_meas0_prep1", "prob_meas1_prep0"})
DURATIONS = frozenset({"T1", "T2", "readout_length"})
MAX_LAYOUT_CANDIDATES = 2_000


class CalibrationError(TrainingError):
    """A calibration that cannot be used: the message names the file and the field, never its values
    beyond the one that is wrong."""


@dataclass(frozen=True)
class Footprint:
    """What a transpiled circuit uses of its device: gate counts per (gate, physical qubits), the
    measured qubits, and the couplers its two-qubit gates run on."""

    gates: dict[str, int]  # "cx:0,1" -> count
    measured: tuple[int, ...]

    @property
    def qubits(self) -> list[int]:
        used = set(self.measured)
        for key in self.gates:
            used.update(_qubits_of(key))
        return sorted(used)

    @property
    def couplers(self) -> list[list[int]]:
        pairs = {tuple(sorted(_qubits_of(k))) for k in self.gates if len(_qubits_of(k)) == 2}
        return [list(p) for p in sorted(pairs)]

    def to_json(self) -> dict[str, Any]:
        return {
            "qubits": self.qubits,
            "couplers": self.couplers,
            "measured": list(self.measured),
            "gates": dict(sorted(self.gates.items())),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Footprint:
        gates = data.get("gates")
        measured = data.get("measured")
        if not isinstance(gates, dict) or not isinstance(measured, list):
            raise CalibrationError("lineage.calibration.layout: needs gates and measured")
        if len(gates) > MAX_GATES:
            raise CalibrationError(f"lineage.calibration.layout.gates: more than {MAX_GATES} entries")
        for key, count in gates.items():
            _qubits_of(str(key))
            if not isinstance(count, int) or count < 0:
                raise CalibrationError(f"lineage.calibration.layout.gates.{key}: not a count")
        if not all(isinstance(q, int) and 0 <= q < MAX_QUBITS for q in measured):
            raise CalibrationError("lineage.calibration.layout.measured: not qubit numbers")
        return cls({str(k): int(v) for k, v in gates.items()}, tuple(measured))

    def relabelled(self, mapping: dict[int, int]) -> Footprint:
        gates: dict[str, int] = {}
        for key, count in self.gates.items():
            name = key.partition(":")[0]
            key2 = _gate_key(name, [mapping[q] for q in _qubits_of(key)])
            gates[key2] = gates.get(key2, 0) + count
        return Footprint(gates, tuple(mapping[q] for q in self.measured))


def _gate_key(name: str, qubits: Iterable[int]) -> str:
    return f"{name}:{','.join(str(q) for q in qubits)}"


def _qubits_of(key: str) -> tuple[int, ...]:
    name, sep, rest = key.partition(":")
    try:
        qubits = tuple(int(q) for q in rest.split(",")) if rest else ()
    except ValueError:
        qubits = ()
    if not sep or not name or not qubits or not all(0 <= q < MAX_QUBITS for q in qubits):
        raise CalibrationError(f"lineage.calibration.layout.gates: {key[:40]!r} is not gate:qubit[,qubit]")
    return qubits


def footprint_of(isa: Any) -> Footprint:
    """The footprint of a circuit transpiled for a device: its gates on physical qubits, and the
    physical qubits its circuit qubits end on (what an Estimator measures)."""
    gates: dict[str, int] = {}
    for instruction in isa.data:
        name = instruction.operation.name
        if name in NON_GATES:
            continue
        key = _gate_key(name, (isa.find_bit(q).index for q in instruction.qubits))
        gates[key] = gates.get(key, 0) + 1
    layout = getattr(isa, "layout", None)
    measured = tuple(layout.final_index_layout()) if layout is not None else tuple(range(isa.num_qubits))
    return Footprint(gates, measured)


@dataclass(frozen=True)
class Calibration:
    """One calibration snapshot of one device."""

    device: str
    last_update: str  # ISO 8601, as the snapshot states it
    digest: str
    snapshot: dict[str, Any] = field(repr=False, compare=False)
    source: str = ""  # where it came from: "package", "calibrations/<device>.json", "service"
    gate_errors: dict[str, float] = field(default_factory=dict, repr=False, compare=False)
    readout_errors: dict[int, float] = field(default_factory=dict, repr=False, compare=False)
    num_qubits: int = 0

    def with_source(self, source: str) -> Calibration:
        return replace(self, source=source)

    def to_bytes(self) -> bytes:
        return pretty_bytes(self.snapshot)

    def registry_path(self) -> str:
        """Where the snapshot is kept in the registry, relative to the registry's root."""
        return f"{CALIBRATIONS_DIR}/{self.device}/{self.digest.removeprefix('sha256:')}.json"

    def error_of(self, key: str) -> float:
        """The error of one gate of a footprint; a two-qubit gate calibrated only in the other
        direction takes that direction's error (the transpiler flips it with single-qubit gates)."""
        if key in self.gate_errors:
            return self.gate_errors[key]
        name, _, _ = key.partition(":")
        qubits = _qubits_of(key)
        if len(qubits) == 2:
            reverse = _gate_key(name, reversed(qubits))
            if reverse in self.gate_errors:
                return self.gate_errors[reverse]
        if len(qubits) == 1 and qubits[0] < self.num_qubits and name in ("rz", "id"):
            return 0.0  # virtual or idle gates some snapshots leave out
        raise CalibrationError(f"the calibration of {self.device} has no {name} on qubits {list(qubits)}")

    def esp(self, footprint: Footprint) -> float:
        """The product of (1 - error) over the footprint's gates and measurements."""
        log_p = 0.0
        for key, count in footprint.gates.items():
            log_p += count * _log1m(self.error_of(key))
        for qubit in footprint.measured:
            if qubit not in self.readout_errors:
                raise CalibrationError(f"the calibration of {self.device} has no readout_error for qubit {qubit}")
            log_p += _log1m(self.readout_errors[qubit])
        return math.exp(log_p)

    def couplers(self) -> list[tuple[int, int]]:
        pairs = set()
        for key in self.gate_errors:
            qubits = _qubits_of(key)
            if len(qubits) == 2:
                pairs.add((min(qubits), max(qubits)))
        return sorted(pairs)

    def lineage(self, footprint: Footprint) -> dict[str, Any]:
        return {
            "device": self.device,
            "lastUpdate": self.last_update,
            "digest": self.digest,
            "source": self.source,
            "layout": footprint.to_json(),
            "esp": round(self.esp(footprint), 6),
        }


def _log1m(error: float) -> float:
    return math.log(max(1.0 - error, 1e-300))


def best_layout(calibration: Calibration, footprint: Footprint) -> tuple[Footprint, float] | None:
    """The placement of the footprint's qubits on the device with the highest ESP under
    ``calibration`` (the same gates on other qubits whose couplers carry its two-qubit gates), or None
    when no other placement exists. At most MAX_LAYOUT_CANDIDATES placements are compared."""
    import rustworkx as rx

    used = footprint.qubits
    index = {q: i for i, q in enumerate(used)}
    pattern = rx.PyGraph()
    pattern.add_nodes_from(used)
    for a, b in footprint.couplers:
        pattern.add_edge(index[a], index[b], None)
    device = rx.PyGraph()
    device.add_nodes_from(range(calibration.num_qubits))
    for a, b in calibration.couplers():
        device.add_edge(a, b, None)
    best: tuple[Footprint, float] | None = None
    mappings = rx.vf2_mapping(device, pattern, subgraph=True, induced=False, id_order=False)
    for n, mapping in enumerate(mappings):
        if n >= MAX_LAYOUT_CANDIDATES:
            break
        placed = footprint.relabelled({used[v]: d for d, v in mapping.items()})
        try:
            value = calibration.esp(placed)
        except CalibrationError:
            continue
        if best is None or value > best[1]:
            best = (placed, value)
    return best


# --- reading snapshots -------------------------------------------------------------------------------


def parse(raw: bytes, where: str, device: str | None = None, num_qubits: int | None = None) -> Calibration:
    """A snapshot checked field by field: located errors name ``where`` and the field."""
    if len(raw) > MAX_CALIBRATION_BYTES:
        raise CalibrationError(f"{where}: {len(raw)} bytes; the limit is {MAX_CALIBRATION_BYTES}")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise CalibrationError(f"{where}: not JSON ({type(err).__name__} at {_position(err)})") from None
    return from_snapshot(data, where, device, num_qubits)


def _position(err: Exception) -> str:
    line, column = getattr(err, "lineno", None), getattr(err, "colno", None)
    return f"line {line}, column {column}" if line else "the start"


def from_snapshot(
    data: Any, where: str, device: str | None = None, num_qubits: int | None = None, source: str = ""
) -> Calibration:
    if not isinstance(data, dict):
        raise CalibrationError(f"{where}: a calibration is a JSON object in props_<device>.json format")
    name = data.get("backend_name")
    if not isinstance(name, str) or not name or len(name) > 100:
        raise CalibrationError(f"{where}: backend_name: names the device, like fake_manila")
    if device is not None and _bare(name) != _bare(device):
        raise CalibrationError(f"{where}: backend_name: the file is for device {device}, not for another device")
    moment = data.get("last_update_date")
    if not isinstance(moment, str) or _parse_time(moment) is None:
        raise CalibrationError(f"{where}: last_update_date: an ISO 8601 date and time is required")
    qubits = data.get("qubits")
    if not isinstance(qubits, list) or not qubits or len(qubits) > MAX_QUBITS:
        raise CalibrationError(f"{where}: qubits: a list with one entry per qubit of the device")
    if num_qubits is not None and len(qubits) != num_qubits:
        raise CalibrationError(
            f"{where}: qubits: {device or name} has {num_qubits} qubits, the file lists {len(qubits)}"
        )
    readout: dict[int, float] = {}
    for q, entries in enumerate(qubits):
        values = _parameters(entries, f"{where}: qubits[{q}]")
        for key in PROBABILITIES & values.keys():
            _probability(values[key], f"{where}: qubits[{q}].{key}")
        for key in DURATIONS & values.keys():
            if values[key] < 0:
                raise CalibrationError(f"{where}: qubits[{q}].{key}: a duration cannot be negative")
        if "readout_error" not in values:
            raise CalibrationError(f"{where}: qubits[{q}].readout_error: missing")
        readout[q] = values["readout_error"]
    gates = data.get("gates")
    if not isinstance(gates, list) or len(gates) > MAX_GATES:
        raise CalibrationError(f"{where}: gates: a list of the device's calibrated gates")
    errors: dict[str, float] = {}
    for g, gate in enumerate(gates):
        at = f"{where}: gates[{g}]"
        if not isinstance(gate, dict):
            raise CalibrationError(f"{at}: an object with gate, qubits and parameters")
        kind, on = gate.get("gate"), gate.get("qubits")
        if not isinstance(kind, str) or not kind or len(kind) > 64:
            raise CalibrationError(f"{at}.gate: names the gate, like cx")
        if (
            not isinstance(on, list)
            or not on
            or not all(isinstance(q, int) and not isinstance(q, bool) for q in on)
            or not all(0 <= q < len(qubits) for q in on)
        ):
            raise CalibrationError(f"{at}.qubits: qubit numbers of this device (0 to {len(qubits) - 1})")
        values = _parameters(gate.get("parameters"), at)
        if "gate_length" in values and values["gate_length"] < 0:
            raise CalibrationError(f"{at}.gate_length: a duration cannot be negative")
        if "gate_error" in values:
            errors[_gate_key(kind, on)] = _probability(values["gate_error"], f"{at}.gate_error")
    return Calibration(
        device=device or name,
        last_update=moment,
        digest=digest_of(data),
        snapshot=data,
        source=source or where,
        gate_errors=errors,
        readout_errors=readout,
        num_qubits=len(qubits),
    )


def _bare(name: str) -> str:
    """A device's name without its family prefix: fake_manila, ibmq_manila and manila are one device."""
    for prefix in ("fake_", "ibmq_", "ibm_"):
        name = name.removeprefix(prefix)
    return name


def _parameters(entries: Any, at: str) -> dict[str, float]:
    if not isinstance(entries, list):
        raise CalibrationError(f"{at}: a list of {{name, value}} entries")
    values: dict[str, float] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise CalibrationError(f"{at}: each entry has a name and a value")
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise CalibrationError(f"{at}.{entry['name'][:40]}: value is not a finite number")
        values[entry["name"]] = float(value)
    return values


def _probability(value: float, at: str) -> float:
    if not 0.0 <= value <= 1.0:
        raise CalibrationError(f"{at}: an error rate lies between 0 and 1")
    return value


def _parse_time(text: str) -> datetime | None:
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def packaged(backend: Any) -> Calibration:
    """The snapshot a fake backend carries in its package (``props_<device>.json``)."""
    name = str(backend.name)
    path = Path(backend.dirname) / str(backend.props_filename)
    return parse(path.read_bytes(), f"{name} (packaged)", name, int(backend.num_qubits)).with_source("package")


def repository_file(device: str) -> str:
    return f"{CALIBRATIONS_DIR}/{device}.json"


def from_repository(repo_root: Path | None, device: str, num_qubits: int) -> Calibration | None:
    """``calibrations/<device>.json`` of the spec repository, when it holds one."""
    if repo_root is None:
        return None
    relative = repository_file(device)
    try:
        path = inside_work_tree(repo_root, relative)
    except OutsideWorkTree as err:
        raise CalibrationError(f"{relative}: {err.reason}") from None
    if not path.exists():
        return None
    if not path.is_file() or os.path.getsize(path) > MAX_CALIBRATION_BYTES:
        raise CalibrationError(f"{relative}: not a file under {MAX_CALIBRATION_BYTES} bytes")
    return parse(path.read_bytes(), relative, device, num_qubits).with_source(relative)


def from_properties(properties: Any, device: str, num_qubits: int | None = None) -> Calibration:
    """A service's current ``BackendProperties`` as a snapshot."""
    data = _jsonable(properties.to_dict())
    return from_snapshot(data, f"{device} (service)", device, num_qubits, source="service")


def for_fake_backend(backend: Any, repo_root: Path | None) -> Calibration:
    """The calibration a fake backend runs under: the repository's file for it if any (then the
    backend is switched to it: its target and noise model are built from that file), else its own."""
    override = from_repository(repo_root, str(backend.name), int(backend.num_qubits))
    if override is None:
        return packaged(backend)
    apply(backend, override)
    return override


def apply(backend: Any, calibration: Calibration) -> None:
    """Make a fake backend run under ``calibration``: its properties, target and noise model."""
    from qiskit_ibm_runtime.utils.backend_decoder import properties_from_server_data

    props = copy.deepcopy(calibration.snapshot)
    properties_from_server_data(props)
    backend._props_dict = props
    backend._target = None
    backend.sim = None


# --- snapshots on their way to the registry -----------------------------------------------------------

_SNAPSHOTS: dict[str, Calibration] = {}
_SNAPSHOT_LIMIT = 256
KEPT_FILE = "calibration.json"


def remember(calibration: Calibration) -> None:
    """Keep the snapshot by its digest until the version that used it is registered."""
    if len(_SNAPSHOTS) >= _SNAPSHOT_LIMIT:
        _SNAPSHOTS.clear()
    _SNAPSHOTS[calibration.digest] = calibration


def keep(calibration: Calibration, folder: Path) -> None:
    """The snapshot beside a training's checkpoint: a restart between training and registration
    still registers it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / KEPT_FILE).write_bytes(calibration.to_bytes())


def recall(lineage: dict[str, Any], folder: Path | None = None, repo_root: Path | None = None) -> Calibration | None:
    """The snapshot ``lineage`` (a ``lineage.calibration``) names, when it can be found again: in
    memory, beside the checkpoint, or (fake backends) where it came from, if its digest still matches."""
    digest, device = str(lineage.get("digest", "")), str(lineage.get("device", ""))
    found = _SNAPSHOTS.get(digest)
    if found is not None:
        return found
    candidates: list[Calibration] = []
    if folder is not None and (folder / KEPT_FILE).is_file():
        with contextlib.suppress(CalibrationError, OSError):
            candidates.append(parse((folder / KEPT_FILE).read_bytes(), KEPT_FILE, device or None))
    return next((c for c in candidates if c.digest == digest), None)
