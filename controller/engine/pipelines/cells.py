"""The cells of a train step: each one a variant of the model's spec, trained and registered as a
version of the model that records which pipeline run, step and cell produced it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from controller.api.quantumpipeline import MatrixValue, TrainStep
from controller.engine.registry.canonical import digest_of


@dataclass(frozen=True)
class Cell:
    """One point of a sweep: spec paths (camelCase, dotted) and the values they take."""

    values: tuple[tuple[str, MatrixValue], ...]

    @cached_property
    def id(self) -> str:
        """Stable across runs and machines: the same values are the same cell (``c-`` and 8 hex)."""
        return "c-" + digest_of({k: v for k, v in self.values})[7:15]

    @property
    def label(self) -> str:
        """``circuit.ansatz.reps=2, training.optimizer.kind=SPSA``; ``(as committed)`` for no values."""
        return ", ".join(f"{k}={_show(v)}" for k, v in self.values) or "(as committed)"

    def as_dict(self) -> dict[str, MatrixValue]:
        return dict(self.values)

    def apply(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A deep copy of the model's wire spec with this cell's values set at their paths."""
        out = copy.deepcopy(spec)
        for path, value in self.values:
            node = out
            *parents, last = path.split(".")
            for part in parents:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
            node[last] = value
        return out


def cells_of(step: TrainStep) -> list[Cell]:
    """The step's cells in their stable order (see :meth:`TrainStep.cells`)."""
    return [Cell(tuple(values.items())) for values in step.cells()]


def _show(value: MatrixValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
