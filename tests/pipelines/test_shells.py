"""``qmlops plan`` and ``qmlops run`` with pipelines: what a run would do and why, cell by cell;
``--pipeline`` to run one now; the live table's row; exit codes as for models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipelines.runs import kinds, seeded
from tests.registry.repos import Repos, git
from tests.validation.cli import qmlops

pytestmark = pytest.mark.slow


def test_plan_then_run_then_a_requested_rerun_from_the_cache(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    plan = qmlops(capsys, "plan", "--repo", str(work))
    assert plan.code == 1
    assert "demo/tiny (specs/tiny.yaml): train: train because no version yet" in plan.lines
    row = next(line for line in plan.lines if line.startswith("pipeline demo/sweep (specs/sweep.yaml): run: run run-"))
    assert "starts: the pipeline has not run yet" in row
    assert "  cell circuit.ansatz.reps=2: train: no version was trained from this input" in plan.lines
    assert "qmlops plan: 1 model, 1 pipeline, 2 to change" in plan.err

    ran = qmlops(capsys, "run", "--repo", str(work), "--once")
    assert ran.code == 0, ran.err
    assert kinds(work)[-1] == "run-finished"
    assert any("pipeline demo/sweep" in line and "Succeeded" in line and "2/2 cells" in line for line in ran.lines)

    settled = qmlops(capsys, "plan", "--repo", str(work), "--output", "json")
    assert settled.code == 0
    (pipeline,) = [row for row in settled.json() if "pipeline" in row]
    assert pipeline["action"] == "nothing" and pipeline["reason"] == "no trigger is due"

    head = git(work, "rev-parse", "HEAD")
    rerun = qmlops(capsys, "run", "--repo", str(work), "--once", "--pipeline", "demo/sweep")
    assert rerun.code == 0, rerun.err
    assert git(work, "rev-parse", "HEAD") != head
    runs = [e for e in _ledger(work) if e["kind"] == "run-started"]
    assert [r["data"]["cause"] for r in runs] == ["specChange", "request"]
    cached = [e for e in _ledger(work) if e["kind"] == "step-succeeded" and "2 from the cache" in e["message"]]
    assert len(cached) == 1


def test_an_unknown_or_malformed_pipeline_request_is_refused(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    malformed = qmlops(capsys, "run", "--repo", str(work), "--once", "--pipeline", "sweep")
    assert malformed.code == 2 and "--pipeline: 'sweep' is not NAMESPACE/NAME" in malformed.err
    unknown = qmlops(capsys, "run", "--repo", str(work), "--once", "--pipeline", "demo/nope")
    assert unknown.code == 1
    assert "--pipeline demo/nope: no such QuantumPipeline under" in unknown.out


def _ledger(work: Path) -> list[dict[str, object]]:
    path = work / "registry/demo/tiny/ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_audit_shows_each_run_cell_by_backend_and_every_versions_evaluations(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    assert qmlops(capsys, "run", "--repo", str(work), "--once").code == 0
    audit = qmlops(capsys, "audit", "demo/tiny", "--repo", str(work), "--verify", "--format", "json")
    assert audit.code == 0, audit.err
    (model,) = audit.json()["models"] if "models" in audit.json() else [audit.json()]
    by_number = {v["version"]: v for v in model["versions"]}
    assert by_number[1]["pipeline"] is None and by_number[2]["pipeline"]["name"] == "sweep"
    assert {e["backend"] for e in by_number[2]["evaluations"]} == {"local:aer", "fake:manila"}
    assert all({"metrics", "at"} <= set(e) for e in by_number[2]["evaluations"])
    (run,) = model["runs"]
    assert run["phase"] == "Succeeded" and run["selected"] in (1, 2)
    assert sorted(c["version"] for c in run["cells"]) == [1, 2]
    assert [c["cached"] for c in sorted(run["cells"], key=lambda c: c["version"])] == [True, False]
    assert set(run["cells"][0]["scores"]) == {"local:aer", "fake:manila"}
    html = tmp_path / "audit.html"
    assert qmlops(capsys, "audit", "--repo", str(work), "--format", "html", "--output", str(html)).code == 0
    page = html.read_text()
    assert "<h3>Pipeline runs</h3>" in page and "★ selected" in page and "(cache)" in page
