"""What a server remembers of its predictions: the labels it gave per request id (until feedback brings
the true ones, which feed the live accuracy window), and a bounded, rotating log of predictions.

The log holds one JSON line per request: time, request id, model, version, the digest of the inputs
and the labels given; the raw inputs only when the server was started with ``--log-inputs``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from controller.engine.live import DEFAULT_WINDOW, LabelledWindow, LiveAccuracy

PENDING_REQUESTS = 10_000  # request ids remembered per model for feedback
MAX_FEEDBACK_ITEMS = 1_000
MAX_LABELS_PER_ITEM = 100_000  # a request holds at most this many rows (protocol.MAX_ROWS)
MAX_ID_CHARS = 128
MAX_CLASSES_SHOWN = 16


class FeedbackError(ValueError):
    """Feedback that cannot be used: ``status`` (404 for an unknown id, 400 otherwise) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def inputs_digest(rows: np.ndarray) -> str:
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(rows, dtype="<f8").tobytes()).hexdigest()


@dataclass(frozen=True)
class Given:
    version: int
    labels: list[str]
    classes: frozenset[str] = frozenset()  # the version's classes: a true label must be one of them


class Outcomes:
    """Per model: the labels given to the latest requests, and the window of labelled rows."""

    def __init__(self, window: int = DEFAULT_WINDOW, pending: int = PENDING_REQUESTS) -> None:
        self.window = window
        self.pending = pending
        self._given: dict[str, OrderedDict[str, Given]] = {}
        self._windows: dict[str, LabelledWindow] = {}
        self._lock = threading.Lock()

    def remember(
        self, model: str, request: str, version: int, labels: list[Any], classes: list[Any] | None = None
    ) -> None:
        known = frozenset(str(c) for c in (classes if classes is not None else labels))
        with self._lock:
            given = self._given.setdefault(model, OrderedDict())
            given[request] = Given(version, [str(x) for x in labels], known)
            given.move_to_end(request)
            while len(given) > self.pending:
                given.popitem(last=False)

    def feedback(self, model: str, body: Any) -> int:
        """``{"feedback": [{"id": ..., "labels": [...]}, ...]}``: the true labels of earlier requests'
        rows, in row order. Returns the rows labelled; each request id is labelled once."""
        items = body.get("feedback") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise FeedbackError(400, "feedback: expected a non-empty list of {id, labels}")
        if len(items) > MAX_FEEDBACK_ITEMS:
            raise FeedbackError(413, f"feedback: {len(items)} items; the limit is {MAX_FEEDBACK_ITEMS}")
        checked: list[tuple[str, list[str]]] = []
        for k, item in enumerate(items):
            rid = item.get("id") if isinstance(item, dict) else None
            labels = item.get("labels") if isinstance(item, dict) else None
            if not isinstance(rid, str) or not isinstance(labels, list):
                raise FeedbackError(400, f"feedback[{k}]: expected {{id, labels}}")
            if len(rid) > MAX_ID_CHARS:
                raise FeedbackError(400, f"feedback[{k}].id: over {MAX_ID_CHARS} characters")
            if len(labels) > MAX_LABELS_PER_ITEM:
                raise FeedbackError(
                    413, f"feedback[{k}].labels: {len(labels)} labels; the limit is {MAX_LABELS_PER_ITEM}"
                )
            if not all(isinstance(x, str | int) and not isinstance(x, bool) for x in labels):
                raise FeedbackError(400, f"feedback[{k}].labels: expected class labels (strings or integers)")
            checked.append((rid, [str(x) for x in labels]))
        with self._lock:
            given = self._given.get(model, OrderedDict())
            for k, (rid, labels) in enumerate(checked):
                if rid not in given:
                    raise FeedbackError(404, f"feedback[{k}].id: no prediction of this model is remembered by that id")
                if len(labels) != len(given[rid].labels):
                    raise FeedbackError(
                        400,
                        f"feedback[{k}].labels: {len(labels)} labels for a request of {len(given[rid].labels)} rows",
                    )
                classes = given[rid].classes
                unknown = next((j for j, label in enumerate(labels) if label not in classes), None)
                if unknown is not None:  # named by position: the value itself is not echoed
                    known = ", ".join(sorted(classes)[:MAX_CLASSES_SHOWN])
                    raise FeedbackError(
                        400,
                        f"feedback[{k}].labels[{unknown}]: not a class of version {given[rid].version} (classes: {known})",
                    )
            window = self._windows.setdefault(model, LabelledWindow(model, self.window))
            rows = 0
            for rid, labels in checked:
                if rid in given:  # an id listed twice is labelled once
                    prior = given.pop(rid)
                    rows += window.add(prior.version, prior.labels, labels)
            return rows

    def live(self, model: str, version: int | None, last: int | None = None) -> LiveAccuracy:
        """``version``'s live accuracy over its latest ``last`` labelled rows (the whole window: None)."""
        with self._lock:
            window = self._windows.get(model)
            if window is not None:
                return window.live(version, last)
            return LiveAccuracy(model, version, 0, 0, self.window if last is None else min(last, self.window))


class PredictionLog:
    """JSON lines appended to ``path``; past ``max_bytes`` the file moves to ``path.1`` (``.1`` to
    ``.2``... up to ``backups``) and a new one starts."""

    def __init__(
        self, path: Path, *, max_bytes: int = 10 * 1024 * 1024, backups: int = 3, inputs: bool = False
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.inputs = inputs
        self._lock = threading.Lock()
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def write(self, *, request: str, model: str, version: int, rows: np.ndarray, labels: list[Any]) -> None:
        record: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "id": request,
            "model": model,
            "version": version,
            "rows": int(rows.shape[0]),
            "inputsDigest": inputs_digest(rows),
            "labels": [str(x) for x in labels],
        }
        if self.inputs:
            record["inputs"] = rows.tolist()
        line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
        with self._lock:
            size = self.path.stat().st_size if self.path.exists() else 0
            if size and size + len(line) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as f:
                f.write(line)

    def _rotate(self) -> None:
        for n in range(self.backups, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
            if newer.exists():
                if n == self.backups and older.exists():
                    older.unlink()
                newer.replace(older)
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
