"""Selecting the candidate a pipeline promotes: its metric aggregated over the evaluate step's
backends (default: its worst backend), ties broken by fewer primitive jobs, then the lower version."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controller.api.quantumpipeline import Aggregate, SelectMode, SelectStep


@dataclass(frozen=True)
class Candidate:
    version: int
    cell: str
    scores: dict[str, float]  # backend -> the selected metric there
    primitive_jobs: int = 0


@dataclass(frozen=True)
class Selection:
    version: int | None
    reason: str
    figures: list[dict[str, object]] = field(default_factory=list)  # every candidate, for the ledger


def aggregate(scores: dict[str, float], how: Aggregate, mode: SelectMode) -> float | None:
    values = [v for v in scores.values() if v is not None and math.isfinite(v)]
    if not values or len(values) != len(scores):
        return None  # a candidate not scored on every backend cannot be compared
    if how is Aggregate.MEAN:
        return sum(values) / len(values)
    return min(values) if mode is SelectMode.MAX else max(values)


def select(step: SelectStep, candidates: list[Candidate]) -> Selection:
    metric = step.metric.value
    ranked: list[tuple[float, int, int, Candidate]] = []
    figures: list[dict[str, object]] = []
    for c in candidates:
        value = aggregate(c.scores, step.aggregate, step.mode)
        figures.append(
            {"version": c.version, "cell": c.cell, "scores": dict(c.scores), "value": value, "jobs": c.primitive_jobs}
        )
        if value is not None:
            key = -value if step.mode is SelectMode.MAX else value
            ranked.append((key, c.primitive_jobs, c.version, c))
    if not ranked:
        return Selection(None, f"no candidate has {metric} on every evaluated backend", figures)
    ranked.sort(key=lambda r: (r[0], r[1], r[2]))
    best = ranked[0][3]
    value = ranked[0][0] if step.mode is SelectMode.MIN else -ranked[0][0]
    how = "worst" if step.aggregate is Aggregate.MIN else "mean"
    reason = (
        f"version {best.version} ({best.cell}) has the {'highest' if step.mode is SelectMode.MAX else 'lowest'} "
        f"{how} {metric} over {len(best.scores)} backend{'s' if len(best.scores) != 1 else ''}: {value:.3f}"
    )
    return Selection(best.version, reason, figures)
