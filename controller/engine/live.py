"""Live accuracy: how the served champion does on the rows whose true labels came back as feedback.

``qmlops serve`` keeps, per model, a bounded window of its latest labelled rows and answers
``GET /v2/models/<namespace>.<name>/live`` with :meth:`LiveAccuracy.to_json`; monitoring reads it back
with :meth:`LiveAccuracy.from_json` and compares it with the accuracy the version was promoted on
(:meth:`LiveAccuracy.drop_from`). Plain data: no HTTP here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_WINDOW = 1000
MAX_WINDOW = 100_000  # the most labelled rows a server keeps per model, and a monitor asks for


class LiveUnavailable(Exception):
    """The live accuracy could not be read (no server, no answer, an answer that is not one); the
    message says why without quoting what the server sent."""


LiveSource = Callable[[str, str, int], "LiveAccuracy"]
"""``(namespace, name, window) -> LiveAccuracy``: the live accuracy of the model's served champion over
its latest ``window`` labelled rows, as the server that serves it keeps it. Raises
:class:`LiveUnavailable`. The shells provide one (``controller.shells.live.ServingEndpoint`` reads a
server's ``/live``); the engine only calls it."""


class LiveAccuracyError(ValueError):
    """A live accuracy document that is not one; the message names the field."""


@dataclass(frozen=True)
class LiveAccuracy:
    """The labelled rows of ``version`` in the window (at most ``window`` of them) and how many were right."""

    model: str  # namespace/name
    version: int | None
    labelled: int
    correct: int
    window: int

    @property
    def accuracy(self) -> float | None:
        """None until a row of this version has been labelled."""
        return self.correct / self.labelled if self.labelled else None

    def drop_from(self, reference: float) -> float | None:
        """How far live accuracy is below ``reference`` (the version's test accuracy); None without labels."""
        accuracy = self.accuracy
        return None if accuracy is None else reference - accuracy

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "version": self.version,
            "labelled": self.labelled,
            "correct": self.correct,
            "window": self.window,
            "accuracy": self.accuracy,
        }

    @classmethod
    def from_json(cls, data: Any) -> LiveAccuracy:
        if not isinstance(data, dict):
            raise LiveAccuracyError("live accuracy: expected an object")
        counts: dict[str, int] = {}
        for key in ("labelled", "correct", "window"):
            value = data.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise LiveAccuracyError(f"live accuracy: {key}: expected a count")
            counts[key] = value
        if counts["correct"] > counts["labelled"] or counts["labelled"] > counts["window"]:
            raise LiveAccuracyError("live accuracy: correct <= labelled <= window does not hold")
        version = data.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool)):
            raise LiveAccuracyError("live accuracy: version: expected a number or null")
        model = data.get("model")
        if not isinstance(model, str):
            raise LiveAccuracyError("live accuracy: model: expected namespace/name")
        return cls(model, version, counts["labelled"], counts["correct"], counts["window"])


class LabelledWindow:
    """The latest ``size`` labelled rows of one model: (version, whether the prediction was right)."""

    def __init__(self, model: str, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError("the window holds at least one row")
        self.model = model
        self.size = size
        self._rows: deque[tuple[int, bool]] = deque(maxlen=size)

    def add(self, version: int, predicted: list[Any], actual: list[Any]) -> int:
        """Label one request's rows; labels compare as text (a CSV's ``1`` is the class ``1``)."""
        for p, a in zip(predicted, actual, strict=True):
            self._rows.append((version, str(p) == str(a)))
        return len(predicted)

    def live(self, version: int | None, last: int | None = None) -> LiveAccuracy:
        """Live accuracy of ``version`` over its latest ``last`` labelled rows (all of its rows in the
        window when None): the rows of other versions in the window do not count."""
        mine = [right for v, right in self._rows if v == version]
        window = self.size if last is None else min(last, self.size)
        mine = mine[-window:]
        return LiveAccuracy(self.model, version, len(mine), sum(mine), window)
