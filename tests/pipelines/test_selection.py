"""Selecting a candidate: best on its worst backend by default, ties to fewer jobs then the lower version."""

from __future__ import annotations

from controller.api.quantumpipeline import SelectStep
from controller.engine.pipelines.selection import Candidate, select


def step(**fields: object) -> SelectStep:
    return SelectStep.model_validate(fields)


NOISY = [
    Candidate(1, "c-a", {"fake:manila": 0.95, "fake:kyiv": 0.60}, primitive_jobs=40),
    Candidate(2, "c-b", {"fake:manila": 0.85, "fake:kyiv": 0.80}, primitive_jobs=40),
    Candidate(3, "c-c", {"fake:manila": 0.70, "fake:kyiv": 0.75}, primitive_jobs=10),
]


def test_by_default_the_candidate_best_on_its_worst_backend_wins() -> None:
    chosen = select(step(), NOISY)
    assert chosen.version == 2
    assert "worst accuracy over 2 backends: 0.800" in chosen.reason
    assert [f["value"] for f in chosen.figures] == [0.60, 0.80, 0.70]


def test_the_mean_can_be_asked_for() -> None:
    assert select(step(aggregate="mean"), NOISY).version == 2
    skewed = [Candidate(1, "c-a", {"x": 1.0, "y": 0.7}), Candidate(2, "c-b", {"x": 0.8, "y": 0.8})]
    assert select(step(aggregate="mean"), skewed).version == 1
    assert select(step(), skewed).version == 2


def test_mode_min_picks_the_lowest_worst_loss() -> None:
    losses = [Candidate(1, "c-a", {"x": 0.2, "y": 0.9}), Candidate(2, "c-b", {"x": 0.5, "y": 0.6})]
    assert select(step(metric="loss", mode="min"), losses).version == 2


def test_ties_go_to_fewer_jobs_then_the_lower_version() -> None:
    tied = [
        Candidate(4, "c-a", {"x": 0.9}, primitive_jobs=30),
        Candidate(3, "c-b", {"x": 0.9}, primitive_jobs=30),
        Candidate(5, "c-c", {"x": 0.9}, primitive_jobs=20),
    ]
    assert select(step(), tied).version == 5
    assert select(step(), tied[:2]).version == 3


def test_a_candidate_missing_a_backend_is_not_compared_and_none_means_no_selection() -> None:
    partial = [Candidate(1, "c-a", {"x": 0.99, "y": float("nan")}), Candidate(2, "c-b", {"x": 0.5, "y": 0.5})]
    assert select(step(), partial).version == 2
    nothing = select(step(), [Candidate(1, "c-a", {"x": float("nan")})])
    assert nothing.version is None
    assert "no candidate has accuracy on every evaluated backend" in nothing.reason
