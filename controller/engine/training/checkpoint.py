"""The training checkpoint: one JSON file written atomically after every primitive job.

It holds the journal of every job the training paid for (the weights it evaluated and what came
back), the iteration, the loss curve, the best weights so far, the Runtime session id and the usage.
The optimizers are deterministic given their seed and the values they are fed, so a resumed training
replays the journal (no job, no cost) and goes on exactly where it stopped: the journal is the
optimizer's state, whatever the optimizer.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.engine.registry.yamlio import write_atomic

FORMAT = "qmlops.io/checkpoint/v1"
FILE = "training.json"


@dataclass
class Entry:
    """One primitive job: what it evaluated and what it returned."""

    kind: str  # "loss" | "gradient" | "test"
    points: list[list[float]]
    values: list[float]
    gradient: list[float] | None = None
    evs: list[Any] | None = None  # the test job's expectation values
    job_id: str | None = None
    qpu_seconds: float = 0.0
    shots: int = 0
    run_seconds: float = 0.0  # inside the primitive
    wall_seconds: float = 0.0  # the whole iteration, the trainer's own work included

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "points": self.points,
            "values": self.values,
            "gradient": self.gradient,
            "evs": self.evs,
            "jobId": self.job_id,
            "qpuSeconds": self.qpu_seconds,
            "shots": self.shots,
            "runSeconds": self.run_seconds,
            "wallSeconds": self.wall_seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(
            kind=str(data["kind"]),
            points=[[float(v) for v in p] for p in data["points"]],
            values=[float(v) for v in data["values"]],
            gradient=[float(v) for v in data["gradient"]] if data.get("gradient") is not None else None,
            evs=data.get("evs"),
            job_id=data.get("jobId"),
            qpu_seconds=float(data.get("qpuSeconds", 0.0)),
            shots=int(data.get("shots", 0)),
            run_seconds=float(data.get("runSeconds", 0.0)),
            wall_seconds=float(data.get("wallSeconds", 0.0)),
        )


@dataclass
class Checkpoint:
    fingerprint: str
    run: str = field(default_factory=lambda: secrets.token_hex(6))
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    session_id: str | None = None
    entries: list[Entry] = field(default_factory=list)
    resumes: int = 0
    folder: Path | None = None

    @property
    def iteration(self) -> int:
        return sum(1 for e in self.entries if e.kind != "test")

    def usage(self) -> dict[str, Any]:
        return {
            "primitiveJobs": len(self.entries),
            "shots": sum(e.shots for e in self.entries),
            "qpuSeconds": round(sum(e.qpu_seconds for e in self.entries), 6),
        }

    def save(self) -> None:
        if self.folder is None:
            return
        body = {
            "format": FORMAT,
            "fingerprint": self.fingerprint,
            "run": self.run,
            "started": self.started,
            "sessionId": self.session_id,
            "iteration": self.iteration,
            "resumes": self.resumes,
            "usage": self.usage(),
            "entries": [e.to_json() for e in self.entries],
        }
        write_atomic(self.folder / FILE, json.dumps(body, allow_nan=False).encode())

    @classmethod
    def open(cls, folder: Path | None, fingerprint: str) -> Checkpoint:
        """The checkpoint of this very training in ``folder``, or a new one. One of another training
        (other spec or data) is never resumed."""
        if folder is not None:
            try:
                data = json.loads((folder / FILE).read_bytes())
                if data.get("format") == FORMAT and data.get("fingerprint") == fingerprint:
                    return cls(
                        fingerprint=fingerprint,
                        run=str(data["run"]),
                        started=str(data["started"]),
                        session_id=data.get("sessionId"),
                        entries=[Entry.from_json(e) for e in data["entries"]],
                        resumes=int(data.get("resumes", 0)) + 1,
                        folder=folder,
                    )
            except (OSError, ValueError, KeyError, TypeError):
                pass  # no checkpoint, or a torn one from another version: start afresh
            folder.mkdir(parents=True, exist_ok=True)
        return cls(fingerprint=fingerprint, folder=folder)


def session_of(folder: Path) -> str | None:
    """The Runtime session id a checkpoint in ``folder`` kept, whatever training it belongs to."""
    try:
        value = json.loads((folder / FILE).read_bytes()).get("sessionId")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None
