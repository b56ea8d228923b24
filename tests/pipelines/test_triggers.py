"""What starts a pipeline run: a request, its own spec changing, a commit touching its globs, a
schedule tick (missed ticks once); drift waits for monitoring. Run ids follow from cause and revision."""

from __future__ import annotations

from datetime import UTC, datetime

from controller.api.quantumpipeline import QuantumPipelineSpec
from controller.engine.pipelines.triggers import (
    LastRun,
    RunCause,
    due_run,
    fired_by_drift,
    glob_matches,
    pipeline_digest,
    waiting_for_monitoring,
)
from tests.api import specs

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def pipeline(**changes: object) -> QuantumPipelineSpec:
    data = specs.pipeline()["spec"]
    for path, value in changes.items():
        data = specs.changed(data, path, value)
    return QuantumPipelineSpec.model_validate(data)


def ran(spec: QuantumPipelineSpec, *, revision: str = "aaa", at: datetime = NOW, request: str | None = None) -> LastRun:
    return LastRun(revision=revision, started=at, spec_digest=pipeline_digest(spec), request=request)


def test_a_new_pipeline_runs_once_then_waits() -> None:
    spec = pipeline()
    start = due_run(spec, None, revision="aaa", now=NOW)
    assert start is not None and start.cause is RunCause.SPEC_CHANGE
    assert due_run(spec, ran(spec), revision="aaa", now=NOW, changed_paths=lambda since: []) is None


def test_a_spec_change_of_the_pipeline_starts_a_run_but_suspend_does_not() -> None:
    before = pipeline()
    after = pipeline(**{"steps.0.train.parallelism": 3})
    start = due_run(after, ran(before), revision="aaa", now=NOW)
    assert start is not None and start.cause is RunCause.SPEC_CHANGE
    assert pipeline_digest(pipeline(suspend=True)) == pipeline_digest(before)


def test_a_commit_touching_a_glob_starts_a_run_naming_the_file() -> None:
    spec = pipeline()
    asked: list[str] = []

    def changed(since: str) -> list[str]:
        asked.append(since)
        return ["README.md", "specs/iris/model.yaml", "specs/iris/data/x.csv"]

    start = due_run(spec, ran(spec, revision="aaa"), revision="bbb", now=NOW, changed_paths=changed)
    assert start is not None and start.cause is RunCause.GIT_CHANGE
    assert start.reason == "specs/iris/data/x.csv and 1 more changed since the last run"
    assert asked == ["aaa"]
    untouched = due_run(spec, ran(spec, revision="aaa"), revision="bbb", now=NOW, changed_paths=lambda s: ["docs/x"])
    assert untouched is None


def test_missed_schedule_ticks_run_once() -> None:
    spec = pipeline()  # "0 2 * * *"
    three_days_ago = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
    start = due_run(spec, ran(spec, at=three_days_ago), revision="aaa", now=NOW, changed_paths=lambda s: [])
    assert start is not None and start.cause is RunCause.SCHEDULE
    assert start.slot == "2026-12-03T02:00:00Z"
    after_tick = datetime(2026, 12, 3, 2, 30, tzinfo=UTC)
    assert due_run(spec, ran(spec, at=after_tick), revision="aaa", now=NOW, changed_paths=lambda s: []) is None


def test_a_request_runs_once_per_request_and_wins_over_other_causes() -> None:
    spec = pipeline()
    start = due_run(spec, ran(spec), revision="aaa", now=NOW, requested_at="2026-12-03T11:00:00Z")
    assert start is not None and start.cause is RunCause.REQUEST
    answered = ran(spec, request="2026-12-03T11:00:00Z")
    assert due_run(spec, answered, revision="aaa", now=NOW, requested_at="2026-12-03T11:00:00Z") is None


def test_run_ids_follow_from_cause_and_revision() -> None:
    spec = pipeline()
    one = due_run(spec, None, revision="aaa", now=NOW)
    again = due_run(spec, None, revision="aaa", now=NOW)
    other = due_run(spec, None, revision="bbb", now=NOW)
    assert one is not None and again is not None and other is not None
    assert one.id == again.id != other.id
    assert one.id.startswith("run-") and len(one.id) == 14


def test_drift_triggers_are_shown_as_waiting_for_monitoring() -> None:
    assert waiting_for_monitoring(pipeline()) == ["drift of accuracy by 0.05 every 6h on fake:manila"]


def test_a_drift_trigger_fires_on_the_models_replay_drift_beyond_its_threshold() -> None:
    spec = pipeline()  # drift of accuracy by 0.05 on fake:manila

    def replay(drop: float, backend: str = "fake:manila") -> tuple[str, str, dict[str, object]]:
        return (
            f"sha256:{int(drop * 1000):064d}",
            "ccc",
            {"check": "replay", "figures": {"drop": drop, "backend": backend}},
        )

    calibration = ("sha256:" + "1" * 64, "ccc", {"check": "calibration", "figures": {"relativeDrop": 0.4}})
    assert fired_by_drift(spec, [calibration, replay(0.04)]) is None  # below the threshold, not its metric
    assert fired_by_drift(spec, [replay(0.2, backend="fake:kyiv")]) is None  # measured on another backend
    start = fired_by_drift(spec, [calibration, replay(0.08)])
    assert start is not None and start.cause is RunCause.DRIFT and start.revision == "ccc"
    assert start.slot == replay(0.08)[0]  # one run per drift entry
    assert "drift (replay)" in start.reason


def test_globs_span_folders_only_with_two_stars() -> None:
    assert glob_matches("specs/iris/**", "specs/iris/a/b.yaml")
    assert glob_matches("specs/*.yaml", "specs/x.yaml")
    assert not glob_matches("specs/*.yaml", "specs/iris/x.yaml")
    assert glob_matches("**/data.csv", "data.csv")
    assert glob_matches("**/data.csv", "a/b/data.csv")
    assert not glob_matches("specs/?.yaml", "specs/ab.yaml")
    assert not glob_matches("specs/iris/**", "specs/irises/x")
