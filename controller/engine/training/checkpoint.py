"""The training checkpoint: an append-only journal, one line per primitive job, written and fsynced
after every job.

It holds every job the training paid for (the weights it evaluated and what came back), and with them
the iteration, the loss curve, the best weights so far, the Runtime session id and the usage. The
optimizers are deterministic given their seed and the values they are fed, so a resumed training
replays the journal (no job, no cost) and goes on exactly where it stopped: the journal is the
optimizer's state, whatever the optimizer. Appending keeps each iteration's write small and constant
(rewriting the whole checkpoint grew with the training); a line torn by a crash is dropped on resume,
which costs at most the one job it recorded.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.engine.registry.yamlio import write_atomic

FORMAT = "qmlops.io/checkpoint/v2"
FILE = "journal.jsonl"


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
    wall_seconds: float = 0.0  # since the previous job ended: the optimizer's step and bookkeeping included

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
class Tally:
    """Running sums over a journal that only grows (or is truncated, and then counted again): a
    training asks for them after every job, and summing the whole journal each time grew with it."""

    counted: int = 0
    iterations: int = 0
    shots: int = 0
    qpu_seconds: float = 0.0
    dearest_qpu_seconds: float = 0.0  # the most one job cost
    run_seconds: float = 0.0
    wall_seconds: float = 0.0

    def over(self, entries: list[Entry]) -> Tally:
        for e in entries[self.counted :]:
            self.iterations += e.kind != "test"
            self.shots += e.shots
            self.qpu_seconds += e.qpu_seconds
            self.dearest_qpu_seconds = max(self.dearest_qpu_seconds, e.qpu_seconds)
            self.run_seconds += e.run_seconds
            self.wall_seconds += e.wall_seconds
        self.counted = len(entries)
        return self


@dataclass
class Checkpoint:
    fingerprint: str
    run: str = field(default_factory=lambda: secrets.token_hex(6))
    started: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    session_id: str | None = None
    entries: list[Entry] = field(default_factory=list)
    resumes: int = 0
    folder: Path | None = None
    _tally: Tally = field(default_factory=Tally, repr=False, compare=False)

    @property
    def totals(self) -> Tally:
        return self._tally.over(self.entries)

    @property
    def iteration(self) -> int:
        return self.totals.iterations

    def usage(self) -> dict[str, Any]:
        totals = self.totals
        return {
            "primitiveJobs": len(self.entries),
            "shots": totals.shots,
            "qpuSeconds": round(totals.qpu_seconds, 6),
        }

    def record(self, entry: Entry, session_id: str | None) -> None:
        """Journal one finished job (and the session it ran in, when that changed)."""
        lines: list[dict[str, Any]] = []
        if session_id and session_id != self.session_id:
            self.session_id = session_id
            lines.append({"sessionId": session_id})
        self.entries.append(entry)
        lines.append({"entry": entry.to_json()})
        self._append(lines)

    def truncate(self, keep: int) -> None:
        """Forget the entries from ``keep`` on (the optimizer took another path than the journal's)."""
        del self.entries[keep:]
        self._tally = Tally()
        self._rewrite()

    def _header(self) -> dict[str, Any]:
        return {"format": FORMAT, "fingerprint": self.fingerprint, "run": self.run, "started": self.started}

    def _lines(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = [self._header(), {"resumes": self.resumes}]
        if self.session_id:
            lines.append({"sessionId": self.session_id})
        return lines + [{"entry": e.to_json()} for e in self.entries]

    def _append(self, lines: list[dict[str, Any]]) -> None:
        if self.folder is None:
            return
        with open(self.folder / FILE, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(line, allow_nan=False) + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())

    def _rewrite(self) -> None:
        if self.folder is not None:
            text = "".join(json.dumps(line, allow_nan=False) + "\n" for line in self._lines())
            write_atomic(self.folder / FILE, text.encode())

    @classmethod
    def open(cls, folder: Path | None, fingerprint: str) -> Checkpoint:
        """The checkpoint of this very training in ``folder``, or a new one. One of another training
        (other spec or data), or of another format, is never resumed."""
        if folder is None:
            return cls(fingerprint=fingerprint)
        folder.mkdir(parents=True, exist_ok=True)
        found = _read(folder)
        if found is not None and found.fingerprint == fingerprint:
            found.resumes += 1
            checkpoint = found
        else:
            checkpoint = cls(fingerprint=fingerprint, folder=folder)
        checkpoint._rewrite()  # compact, without a torn last line, before anything is appended
        return checkpoint


def _read(folder: Path) -> Checkpoint | None:
    try:
        text = (folder / FILE).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    checkpoint: Checkpoint | None = None
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
            if checkpoint is None:
                if line.get("format") != FORMAT:
                    return None
                checkpoint = Checkpoint(str(line["fingerprint"]), str(line["run"]), str(line["started"]), folder=folder)
            elif "entry" in line:
                checkpoint.entries.append(Entry.from_json(line["entry"]))
            elif "sessionId" in line:
                checkpoint.session_id = str(line["sessionId"]) or None
            elif "resumes" in line:
                checkpoint.resumes = int(line["resumes"])
        except (ValueError, KeyError, TypeError, AttributeError):
            break  # a line torn by a crash: what came before it stands
    return checkpoint


def summary(folder: Path) -> dict[str, Any] | None:
    """What a checkpoint in ``folder`` says, for shells and tests: run, iteration, session, usage."""
    checkpoint = _read(folder)
    if checkpoint is None:
        return None
    return {
        "run": checkpoint.run,
        "started": checkpoint.started,
        "iteration": checkpoint.iteration,
        "sessionId": checkpoint.session_id,
        "resumes": checkpoint.resumes,
        "usage": checkpoint.usage(),
    }


def session_of(folder: Path) -> str | None:
    """The Runtime session id a checkpoint in ``folder`` kept, whatever training it belongs to."""
    checkpoint = _read(folder)
    return checkpoint.session_id if checkpoint is not None else None
