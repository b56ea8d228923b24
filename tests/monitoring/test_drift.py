"""A champion on fake:manila watched through a calibration refresh: an untouched calibration never
drifts; a degraded one (errors tripled on the champion's own qubits) is detected on the first check,
recorded once with its evidence, and retrained on; qmlops monitor says the same with its exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controller.cli.main import main
from controller.engine.decisions import LedgerKind
from controller.engine.training.calibration import Footprint, parse
from tests.monitoring.world import World
from tests.training import calibrations


def kinds(world: World) -> list[str]:
    return [str(e.kind) for e in world.ledger()]


def monitor(world: World, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["monitor", "--repo", str(world.work), "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def checks_of(report: dict) -> dict[str, dict]:
    return {c["check"]: c for c in report["models"][0]["checks"]}


def test_a_champion_is_watched_through_a_calibration_refresh(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = World.create(tmp_path)
    first = world.reconcile()
    assert kinds(world) == ["registered", "gate-passed", "promoted"]
    hardware = world.version(1)["artifact"]["lineage"]["calibration"]

    # the snapshot is in Git, content-addressed, once: the ESP is recomputed from Git alone
    kept = world.work / "registry/calibrations/fake_manila" / (hardware["digest"].removeprefix("sha256:") + ".json")
    snapshot = parse(kept.read_bytes(), "kept", "fake_manila")
    assert snapshot.digest == hardware["digest"]
    assert snapshot.esp(Footprint.from_json(hardware["layout"])) == pytest.approx(hardware["esp"], abs=1e-6)
    assert first.status.monitoring is None  # no champion when the checks ran: nothing to watch yet
    # an untouched calibration: checked, never a drift, nothing written
    again = world.reconcile()
    assert kinds(world) == ["registered", "gate-passed", "promoted"]
    watched = again.status.monitoring
    assert watched is not None and watched.verdict == "ok" and watched.version == 1
    assert watched.esp == pytest.approx(hardware["esp"]) and watched.esp_at_training == pytest.approx(hardware["esp"])
    code, report = monitor(world, capsys)
    assert code == 0
    checks = checks_of(report)
    assert checks["calibration"]["verdict"] == "ok" and checks["calibration"]["figures"]["relativeDrop"] == 0.0
    assert checks["replay"]["verdict"] == "ok" and checks["replay"]["figures"]["drop"] == 0.0
    assert checks["data"]["verdict"] == "ok"

    # a refresh that changed nothing but the date is no drift either
    world.commit_calibration(calibrations.degraded(factor=1.0, date="2026-11-30T06:00:00+00:00"))
    code, report = monitor(world, capsys)
    assert code == 0, report
    assert (
        checks_of(report)["calibration"]["figures"]["calibration"]["after"]["lastUpdate"] == "2026-11-30T06:00:00+00:00"
    )

    # errors tripled on the champion's own qubits: seen on the first check after it appears
    layout = hardware["layout"]["qubits"]
    world.commit_calibration(calibrations.degraded(factor=3.0, qubits=layout))
    code, report = monitor(world, capsys)
    assert code == 1
    calibration = checks_of(report)["calibration"]
    assert calibration["verdict"] == "drift"
    figures = calibration["figures"]
    assert (
        figures["esp"]["before"] == pytest.approx(hardware["esp"]) and figures["esp"]["after"] < hardware["esp"] * 0.9
    )
    assert figures["calibration"]["before"]["lastUpdate"] == hardware["lastUpdate"]
    assert figures["calibration"]["after"]["lastUpdate"] == "2026-12-01T06:00:00+00:00"
    assert (
        set(figures["betterLayout"]["qubits"]).isdisjoint(layout)
        or figures["betterLayout"]["esp"] > figures["esp"]["after"]
    )
    assert "accuracy" in checks_of(report)["replay"]["figures"]

    # the reconciler records it once, with the evidence, and retrains on it
    world.reconcile()
    entries = world.ledger()
    drifts = [e for e in entries if e.kind == LedgerKind.DRIFT_DETECTED]
    assert drifts and drifts[0].data["check"] == "calibration" and drifts[0].version == 1
    assert drifts[0].data["figures"]["esp"]["after"] == figures["esp"]["after"]
    assert drifts[0].data["actions"] == ["retrain", "alert"]
    registered = [e for e in entries if e.kind == LedgerKind.REGISTERED]
    assert len(registered) == 2 and "a drift was detected (calibration" in registered[1].data["reason"]
    retrained = world.version(2)["artifact"]["lineage"]["calibration"]
    assert (
        retrained["lastUpdate"] == "2026-12-01T06:00:00+00:00"
        and retrained["source"] == "calibrations/fake_manila.json"
    )
    assert (world.work / "registry/calibrations/fake_manila" / (retrained["digest"][7:] + ".json")).is_file()
    # acted on once: the same calibration is never acted on again
    before = kinds(world)
    world.reconcile()
    assert kinds(world) == before

    # the audit shows the drift on the timeline and plots ESP (and the replayed accuracy) over time
    assert main(["audit", "--repo", str(world.work), "demo/watched", "--format", "json"]) == 0
    timeline = json.loads(capsys.readouterr().out)["models"][0]["timeline"]
    assert any(e["kind"] == "drift-detected" and e["data"]["check"] == "calibration" for e in timeline)
    page = tmp_path / "audit.html"
    assert main(["audit", "--repo", str(world.work), "--format", "html", "--output", str(page)]) == 0
    html = page.read_text()
    assert "Hardware drift" in html and "ESP and replayed accuracy over time" in html
    assert f"{hardware['esp']:.4f}" in html and f"{figures['esp']['after']:.4f}" in html


def test_block_promotion_holds_a_new_version_until_a_human_pins_one(tmp_path: Path) -> None:
    world = World.create(tmp_path, actions="blockPromotion")
    world.reconcile()
    layout = world.version(1)["artifact"]["lineage"]["calibration"]["layout"]["qubits"]
    world.commit_calibration(calibrations.degraded(factor=3.0, qubits=layout))
    held = world.reconcile()
    assert kinds(world) == ["registered", "gate-passed", "promoted", "drift-detected"]
    assert held.status.monitoring is not None and held.status.monitoring.verdict == "drift"
    # a new spec trains version 2, which passes its gates but is not promoted while the drift holds
    spec = (world.work / "specs/watched.yaml").read_text().replace("maxIterations: 2", "maxIterations: 3")
    world.repos.commit_file(world.work, "specs/watched.yaml", spec, "One more iteration")
    outcome = world.reconcile()
    assert kinds(world)[-2:] == ["registered", "gate-passed"]
    assert "held by a drift" in (outcome.status.message or "") or any(
        "held by a drift" in c.message for c in outcome.status.conditions
    )


def test_plan_says_which_checks_are_due_and_why_without_running_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from controller.engine.memo import Memo
    from controller.engine.monitoring import checks
    from controller.engine.training import evaluation

    world = World.create(tmp_path)
    world.reconcile()  # trains version 1 on fake:manila and promotes it
    replays: list[str] = []
    real = evaluation.evaluate

    def counted(*args: Any, **kwargs: Any) -> Any:
        replays.append(str(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", counted)
    monkeypatch.setattr(checks, "_BASELINES", Memo(8))  # no replay remembered from another test
    reconciler = world.reconciler()
    plan = reconciler.plan(world.observed(reconciler))
    assert plan.checks_due == ("calibration", "replay", "data")
    assert plan.reason == (
        "version 1 is the champion; "
        "monitoring checks due (calibration, replay, data): version 1 has not been checked by this controller yet"
    )
    assert plan.changes is False and replays == [], "plan replays no noisy circuit"
    assert main(["plan", "--repo", str(world.work), "--output", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["checksDue"] == ["calibration", "replay", "data"] and replays == []
    outcome = reconciler.reconcile(world.observed(reconciler))  # run runs the very same step, checks and all
    assert replays == ["fake:manila"], "the replay under today's calibration (the training's is the same)"
    assert outcome.status.monitoring is not None and outcome.status.monitoring.verdict == "ok"
    assert reconciler.plan(world.observed(reconciler)).checks_due == (), "checked: not due again for 6h"
