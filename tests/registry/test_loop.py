"""The whole loop on real repositories with a bare remote and real (tiny) trainings on the statevector
simulator: run, idempotence, crashes at every step, racing runners, pins and rollbacks, approvals,
plan and audit."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.engine import training
from controller.engine.reconcile import Outcome, Reconciler, TrainingDue, Workspaces
from controller.engine.registry import Registry
from controller.engine.registry.git import Git
from controller.engine.registry.store import TRAILER_DECISION
from controller.runner.specs import observe
from tests.registry.repos import DEFAULT_PROMOTION, Repos, git, tiny_spec
from tests.validation.cli import Result, qmlops

pytestmark = pytest.mark.slow

SPEC = "specs/tiny.yaml"


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing on the way catches it."""


class CountingTrainer:
    """The real trainer, counted (how many trainings ran to the end)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, spec: Any, **kwargs: Any) -> Any:
        artifact = training.train(spec, **kwargs)
        self.calls += 1
        return artifact


def seeded(repos: Repos, name: str = "work", spec: str | None = None) -> Path:
    work = repos.clone(name)
    repos.commit_file(work, SPEC, spec or tiny_spec(), "Add the tiny model")
    repos.push(work)
    return work


def reconciler(work: Path, tmp: Path, trainer: Callable[..., Any] | None = None) -> Reconciler:
    registry = Registry(work)
    return Reconciler(registry, trainer=trainer or CountingTrainer(), checkpoint_root=tmp / f"ckpt-{work.name}")


def reconcile_all(rec: Reconciler) -> list[Outcome]:
    rec.registry.sync()
    found = observe(rec.registry.git, rec.registry.repo / "specs")
    assert not found.problems, [p.format() for p in found.problems]
    return [rec.reconcile(observed) for observed, _ in found.models]


def decisions(repos: Repos) -> list[str]:
    """The decision trailers on the remote, oldest first."""
    text = repos.remote_log("--reverse", f"--format=%(trailers:key={TRAILER_DECISION},valueonly)")
    return [line for line in text.splitlines() if line.strip()]


def ledger(work: Path, model: str = "demo/tiny") -> list[dict[str, Any]]:
    path = work / "registry" / model / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(capsys: pytest.CaptureFixture[str], work: Path, *args: str) -> Result:
    return qmlops(capsys, "run", "--repo", str(work), "--once", *args)


# --- the loop ------------------------------------------------------------------------------------------


def test_run_trains_registers_promotes_and_pushes_then_changes_nothing(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    first = run(capsys, work)
    assert first.code == 0, first.out + first.err
    assert decisions(repos) == ["registered", "gate-passed", "promoted"]
    log = repos.remote_log("-1", "--format=%an <%ae>%n%(trailers:only)")
    assert log.splitlines()[:4] == [
        "qmlops <qmlops@example.invalid>",
        "Qmlops-Model: demo/tiny",
        "Qmlops-Version: 1",
        "Qmlops-Decision: promoted",
    ]
    manifest = json.loads((work / "registry/demo/tiny/versions/1.json").read_text())
    head = git(work, "log", "-1", "--format=%H", "--", SPEC)
    assert manifest["source"] == {
        "repository": str(repos.remote),
        "revision": f"main@sha1:{head}",
        "path": SPEC,
        "author": "Alice <alice@example.com>",
    }
    assert manifest["artifactDigest"] == manifest["artifact"]["digest"]
    assert "promoted" in first.out
    before = git(repos.remote, "rev-parse", "main")
    second = run(capsys, work)
    assert second.code == 0
    assert git(repos.remote, "rev-parse", "main") == before
    assert git(work, "status", "--porcelain") == ""
    plan = qmlops(capsys, "plan", "--repo", str(work))
    assert plan.code == 0, plan.out
    assert plan.out.strip() == "demo/tiny (specs/tiny.yaml): nothing version 1: version 1 is the champion"
    audit = qmlops(capsys, "audit", "--repo", str(work), "--verify")
    assert audit.code == 0, audit.err
    assert "verify: ok" in audit.out


def test_a_spec_change_trains_the_next_version_judged_against_the_champion(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    trainer = CountingTrainer()
    rec = reconciler(work, tmp_path, trainer)
    reconcile_all(rec)
    changed = tiny_spec(iterations=6, promotion=DEFAULT_PROMOTION + "\n    beatChampionBy: 0.0")
    sha = repos.commit_file(work, SPEC, changed, "More iterations", author="Bob <bob@example.com>")
    plan = rec.plan(observe(rec.registry.git, work / "specs").models[0][0])
    assert (plan.action, plan.changes) == ("train", True)
    assert plan.reason.startswith(f"train because the spec changed at {sha[:12]} since version 1")
    [outcome] = reconcile_all(rec)
    assert trainer.calls == 2
    entries = ledger(work)
    v1, v2 = (entries[0]["data"]["metrics"]["accuracy"], entries[3]["data"]["metrics"]["accuracy"])
    beats = v2 >= v1
    expected = (
        [("registered", 2), ("gate-passed", 2), ("promoted", 2)] if beats else [("registered", 2), ("gate-failed", 2)]
    )
    assert [(e["kind"], e["version"]) for e in entries][3:] == expected
    gate = entries[4]["data"]
    assert gate["champion"] == {"version": 1, "value": v1, "how": "same test split"}
    assert outcome.status.champion is not None and outcome.status.champion.version == (2 if beats else 1)
    assert outcome.status.source is not None and outcome.status.source.author == "Bob <bob@example.com>"
    assert [d.kind for d in outcome.decisions] == [kind for kind, _ in expected]
    assert all(d.commit and git(repos.remote, "cat-file", "-t", d.commit) == "commit" for d in outcome.decisions)


# --- nothing lost, nothing paid twice ---------------------------------------------------------------------


def test_a_crash_between_training_and_commit_registers_once_without_retraining(
    repos: Repos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = seeded(repos)
    trainer = CountingTrainer()
    rec = reconciler(work, tmp_path, trainer)
    real_commit = Git.commit

    def dies_before_committing(self: Git, *args: Any, **kwargs: Any) -> str:
        raise Crash  # the version file and the ledger line are written, the commit is not

    monkeypatch.setattr(Git, "commit", dies_before_committing)
    with pytest.raises(Crash):
        reconcile_all(rec)
    assert trainer.calls == 1
    assert git(work, "status", "--porcelain", "registry")  # half-written files are left behind
    monkeypatch.setattr(Git, "commit", real_commit)
    again = reconciler(work, tmp_path, trainer)  # a new process: same checkpoint folder, new objects
    reconcile_all(again)
    assert trainer.calls == 1, "the finished training was not reused"
    assert decisions(repos) == ["registered", "gate-passed", "promoted"]
    assert sorted(p.name for p in (work / "registry/demo/tiny/versions").iterdir()) == ["1.json"]
    assert not (tmp_path / "ckpt-work" / "demo" / "tiny").exists(), "the kept artifact outlived its push"


def test_a_reconcile_not_licensed_to_train_stops_at_the_training_without_writing(
    repos: Repos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator reconciles without a training licence until a model's training daemon runs."""
    work = seeded(repos)
    trainer = CountingTrainer()
    rec = reconciler(work, tmp_path, trainer)
    rec.registry.sync()
    found = observe(rec.registry.git, rec.registry.repo / "specs")
    ((observed, _),) = found.models
    head = git(work, "rev-parse", "HEAD")
    with pytest.raises(TrainingDue, match="training because no version yet"):
        rec.reconcile(observed, may_train=False)
    assert trainer.calls == 0 and git(work, "rev-parse", "HEAD") == head and decisions(repos) == []

    # licensed, it trains; a training that finished before a crash is registered without a licence
    real_commit = Git.commit
    monkeypatch.setattr(Git, "commit", lambda *_, **__: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        rec.reconcile(observed)
    assert trainer.calls == 1
    monkeypatch.setattr(Git, "commit", real_commit)
    outcome = reconciler(work, tmp_path, trainer).reconcile(observed, may_train=False)
    assert trainer.calls == 1 and outcome.status.champion is not None
    assert decisions(repos) == ["registered", "gate-passed", "promoted"]


def test_a_crash_after_the_commit_before_the_push_pushes_once(
    repos: Repos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = seeded(repos)
    trainer = CountingTrainer()
    rec = reconciler(work, tmp_path, trainer)
    real_publish = Git.publish

    def dies_before_pushing(self: Git, *args: Any, **kwargs: Any) -> Any:
        if self.unpushed():
            raise Crash
        return real_publish(self, *args, **kwargs)

    monkeypatch.setattr(Git, "publish", dies_before_pushing)
    with pytest.raises(Crash):
        reconcile_all(rec)
    assert decisions(repos) == []
    local = git(work, "log", "--format=%s", "origin/main..HEAD").splitlines()
    assert len(local) == 3
    monkeypatch.setattr(Git, "publish", real_publish)
    reconcile_all(reconciler(work, tmp_path, trainer))
    assert trainer.calls == 1
    assert decisions(repos) == ["registered", "gate-passed", "promoted"]


def test_an_interrupted_training_resumes_from_its_checkpoint(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos, spec=tiny_spec(iterations=6))
    rec = reconciler(work, tmp_path)
    seen: list[int] = []

    def progress(update: Any) -> None:
        seen.append(update.iteration)

    observed = observe(rec.registry.git, work / "specs").models[0][0]
    with pytest.raises(training.TrainingStopped):
        rec.reconcile(observed, on_progress=progress, should_stop=lambda: len(seen) >= 2)
    assert decisions(repos) == []
    (kept,) = Workspaces(tmp_path / "ckpt-work", "demo", "tiny").all()  # one training, in its own folder
    assert any(kept.checkpoint_dir.iterdir())
    plan = rec.plan(observed)
    assert plan.action == "train" and "resuming from its checkpoint" in plan.reason
    resumed: list[int] = []
    rec.reconcile(observed, on_progress=lambda u: resumed.append(u.iteration))
    assert resumed and resumed[0] > 1, f"restarted from scratch: {resumed}"
    assert decisions(repos) == ["registered", "gate-passed", "promoted"]


def test_two_runners_training_the_same_model_at_once_register_it_once(repos: Repos, tmp_path: Path) -> None:
    """Runner b decides the same training as runner a and finishes after a pushed it: b's commit is
    dropped in the rebase, b decides again on a's history and records its artifact as superseded (with
    what it spent), never as a second version; the ledger chain stays whole."""
    work_a = seeded(repos, "a")
    work_b = repos.clone("b")
    release = threading.Event()
    trained = threading.Event()

    def slow_trainer(spec: Any, **kwargs: Any) -> Any:
        artifact = training.train(spec, **kwargs)
        trained.set()
        assert release.wait(120), "runner a never finished"
        return artifact

    rec_b = reconciler(work_b, tmp_path, slow_trainer)
    found: list[Outcome] = []
    errors: list[BaseException] = []

    def runner_b() -> None:
        try:
            found.extend(reconcile_all(rec_b))
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=runner_b)
    thread.start()
    assert trained.wait(120)
    reconcile_all(reconciler(work_a, tmp_path))  # a trains, registers version 1 and pushes first
    release.set()
    thread.join(120)
    assert not errors, errors
    entries = ledger(work_b)
    assert [(e["kind"], e["version"]) for e in entries] == [
        ("registered", 1),
        ("gate-passed", 1),
        ("promoted", 1),
        ("superseded", 1),
    ]
    assert entries[-1]["data"]["trainingKey"] == entries[0]["data"]["trainingKey"]
    assert entries[-1]["data"]["artifactDigest"] != entries[0]["data"]["artifactDigest"]
    assert "qpuSeconds" in entries[-1]["data"]["usage"]
    assert [e["seq"] for e in entries] == list(range(1, 5))
    assert all(e["prev"] == p["digest"] for p, e in itertools.pairwise(entries))
    assert decisions(repos) == [e["kind"] for e in entries]
    assert [d.kind for d in found[0].decisions] == ["superseded"]
    assert sorted(p.name for p in (work_b / "registry/demo/tiny/versions").iterdir()) == ["1.json"]
    assert reconcile_all(reconciler(work_b, tmp_path))[0].decisions == [], "superseded once, not on every pass"
    assert not (tmp_path / "ckpt-b" / "demo" / "tiny").exists(), "the superseded artifact outlived its push"


def test_reverting_the_spec_trains_again_although_its_training_key_was_registered_before(
    repos: Repos, tmp_path: Path
) -> None:
    """The same training key registered long ago (before the spec moved on and back) is no duplicate:
    only a registration made while the training ran supersedes it."""
    work = seeded(repos)
    rec = reconciler(work, tmp_path)
    reconcile_all(rec)
    repos.commit_file(work, SPEC, tiny_spec(iterations=5), "Five iterations")
    repos.push(work)
    reconcile_all(rec)
    repos.commit_file(work, SPEC, tiny_spec(), "Back to four iterations")
    repos.push(work)
    reconcile_all(rec)
    registered = [e for e in ledger(work) if e["kind"] == "registered"]
    assert [e["version"] for e in registered] == [1, 2, 3]
    assert registered[0]["data"]["trainingKey"] == registered[2]["data"]["trainingKey"]


# --- pins, rollbacks, approvals, blocks -----------------------------------------------------------------


def test_pin_rolls_back_and_forward_and_a_missing_pin_blocks(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    trainer = CountingTrainer()
    rec = reconciler(work, tmp_path, trainer)
    reconcile_all(rec)
    repos.commit_file(work, SPEC, tiny_spec(iterations=5), "Retrain")
    reconcile_all(rec)
    index = work / "registry/demo/tiny/model.yaml"
    annotated = index.read_text().replace("versions:\n", "# reviewed by the audit team\nversions:\n", 1)
    repos.commit_file(work, "registry/demo/tiny/model.yaml", annotated, "Note on the registry")
    pinned = tiny_spec(iterations=5, promotion=DEFAULT_PROMOTION + "\n    pin: 1")
    repos.commit_file(work, SPEC, pinned, "Roll back to version 1")
    [outcome] = reconcile_all(rec)
    assert trainer.calls == 2, "a pin is not a reason to train"
    assert ledger(work)[-1]["kind"] == "rolled-back" and ledger(work)[-1]["version"] == 1
    assert outcome.status.champion is not None and outcome.status.champion.version == 1
    assert "# reviewed by the audit team\n" in index.read_text()
    assert "champion:\n  version: 1\n" in index.read_text()
    missing = tiny_spec(iterations=5, promotion=DEFAULT_PROMOTION + "\n    pin: 9")
    repos.commit_file(work, SPEC, missing, "Pin a version that does not exist")
    [outcome] = reconcile_all(rec)
    assert ledger(work)[-1]["kind"] == "blocked"
    assert ledger(work)[-1]["message"] == "promotion.pin: version 9 does not exist (the latest is version 2)"
    assert outcome.status.phase is not None and outcome.status.phase.value == "Blocked"
    head = git(repos.remote, "rev-parse", "main")
    reconcile_all(rec)
    assert git(repos.remote, "rev-parse", "main") == head, "the same block is recorded once"
    forward = tiny_spec(iterations=5, promotion=DEFAULT_PROMOTION + "\n    pin: 2")
    repos.commit_file(work, SPEC, forward, "Forward to version 2")
    reconcile_all(rec)
    assert (ledger(work)[-1]["kind"], ledger(work)[-1]["version"]) == ("promoted", 2)


def test_approvals_in_git_promote_a_version(repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    promotion = DEFAULT_PROMOTION + "\n    requiredApprovals: 2"
    work = seeded(repos, spec=tiny_spec(promotion=promotion))
    rec = reconciler(work, tmp_path)
    [outcome] = reconcile_all(rec)
    assert outcome.status.phase is not None and outcome.status.phase.value == "Evaluating"
    assert "0 of 2" in (outcome.status.message or "")
    plan = qmlops(capsys, "plan", "--repo", str(work), "--output", "json")
    assert plan.code == 0
    assert plan.json()[0]["action"] == "wait"
    for author in ("Bob <bob@example.com>", "Bob <bob@example.com>", "Eve <eve@example.com>"):
        git(
            work,
            "commit",
            "--quiet",
            "--allow-empty",
            f"--author={author}",
            "-m",
            "lgtm",
            "--trailer=Qmlops-Approve: demo/tiny@1",
        )
    plan = qmlops(capsys, "plan", "--repo", str(work))
    assert plan.code == 1 and "1 new approval to record" in plan.out
    [outcome] = reconcile_all(rec)
    assert outcome.status.phase is not None and outcome.status.phase.value == "Evaluating"
    assert [e["kind"] for e in ledger(work)] == ["registered", "gate-passed", "approved"]
    git(
        work,
        "commit",
        "--quiet",
        "--allow-empty",
        "--author=Alice <alice@example.com>",
        "-m",
        "ok",
        "--trailer=Qmlops-Approve: demo/tiny@1",
    )
    [outcome] = reconcile_all(rec)
    assert [e["kind"] for e in ledger(work)][3:] == ["approved", "promoted"]
    assert outcome.status.champion is not None
    audit = qmlops(capsys, "audit", "tiny", "--repo", str(work), "--format", "json")
    kinds = [e["kind"] for e in audit.json()["models"][0]["timeline"]]
    assert kinds.count("approval-not-counted") == 1  # eve's; bob's second commit is the same approver


def test_governance_blocks_before_any_training(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tiny_spec().replace("backend: local:statevector", "backend: fake:manila")
    work = seeded(repos, spec=blocked)
    trainer = CountingTrainer()
    rec = reconciler(work, tmp_path, trainer)
    [outcome] = reconcile_all(rec)
    assert trainer.calls == 0
    assert outcome.status.phase is not None and outcome.status.phase.value == "Blocked"
    assert [e["kind"] for e in ledger(work)] == ["blocked"]
    assert "blocked by rule allowed-backends" in ledger(work)[0]["message"]
    plan = qmlops(capsys, "plan", "--repo", str(work))
    assert plan.code == 0 and ": block: blocked by rule allowed-backends" in plan.out
    head = git(repos.remote, "rev-parse", "main")
    reconcile_all(rec)
    assert git(repos.remote, "rev-parse", "main") == head


# --- plan and audit ----------------------------------------------------------------------------------------


def test_plan_previews_without_training_or_committing(repos: Repos, capsys: pytest.CaptureFixture[str]) -> None:
    work = seeded(repos)
    head = git(work, "rev-parse", "HEAD")
    result = qmlops(capsys, "plan", "--repo", str(work))
    assert result.code == 1
    assert result.out.strip() == "demo/tiny (specs/tiny.yaml): train: train because no version yet"
    assert git(work, "rev-parse", "HEAD") == head and git(work, "status", "--porcelain") == ""
    since = qmlops(capsys, "plan", "--repo", str(work), "--since", "HEAD", "--output", "json")
    assert since.code == 0 and since.json() == []
    (work / "specs/broken.yaml").write_text("apiVersion: qmlops.io/v1alpha1\nkind: QuantumModel\nmetadata: {name: x}\n")
    broken = qmlops(capsys, "plan", "--repo", str(work), "--since", "HEAD")
    assert broken.code == 2 and "specs/broken.yaml:" in broken.err
    missing = qmlops(capsys, "plan", "--repo", str(work), "--since", "no-such-rev")
    assert missing.code == 2 and "'no-such-rev' is not a commit" in missing.err


def test_verify_names_a_rewritten_metric_and_the_commit(repos: Repos, capsys: pytest.CaptureFixture[str]) -> None:
    work = seeded(repos)
    assert run(capsys, work).code == 0
    path = work / "registry/demo/tiny/versions/1.json"
    data = json.loads(path.read_text())
    data["artifact"]["metrics"]["accuracy"] = 1.0
    sha = repos.commit_file(
        work,
        "registry/demo/tiny/versions/1.json",
        json.dumps(data, indent=2),
        "tweak",
        author="Mallory <mallory@example.com>",
    )
    result = qmlops(capsys, "audit", "--repo", str(work), "--verify")
    assert result.code == 1
    assert "registry/demo/tiny/versions/1.json: version 1: content does not match its digest" in result.err
    assert f"broken by commit {sha[:12]} (Mallory <mallory@example.com>" in result.err


def test_verify_catches_a_forger_who_recomputes_digests(repos: Repos, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.engine.registry import versions as version_files

    work = seeded(repos)
    assert run(capsys, work).code == 0
    path = work / "registry/demo/tiny/versions/1.json"
    data = json.loads(path.read_text())
    data["artifact"]["metrics"]["accuracy"] = 1.0
    data["digest"] = version_files.computed_digest(data)
    sha = repos.commit_file(
        work,
        "registry/demo/tiny/versions/1.json",
        json.dumps(data, indent=2),
        "tweak",
        author="qmlops <qmlops@example.invalid>",
    )
    result = qmlops(capsys, "audit", "--repo", str(work), "--verify", "--format", "json")
    assert result.code == 1
    problems = result.json()["models"][0]["verification"]["problems"]
    messages = [p["message"] for p in problems]
    assert any("that ledger entry 1 registered (rewritten)" in m for m in messages), messages
    assert any(m == "version file modified: versions are immutable" for m in messages), messages
    assert {p["commit"]["sha"] for p in problems} == {sha}


def test_verify_names_a_rewritten_ledger_entry(repos: Repos, capsys: pytest.CaptureFixture[str]) -> None:
    work = seeded(repos)
    assert run(capsys, work).code == 0
    path = work / "registry/demo/tiny/ledger.jsonl"
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["message"] = "version 1 passes its gates (reviewed)"
    lines[1] = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    sha = repos.commit_file(
        work, "registry/demo/tiny/ledger.jsonl", "\n".join(lines) + "\n", "fix wording", author="Eve <eve@example.com>"
    )
    result = qmlops(capsys, "audit", "--repo", str(work), "--verify")
    assert result.code == 1
    assert "ledger entry 2 (gate-passed version 1): its content does not match its digest" in result.err
    assert f"broken by commit {sha[:12]} (Eve <eve@example.com>" in result.err


def test_html_report_is_self_contained(repos: Repos, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    work = seeded(repos)
    assert run(capsys, work).code == 0
    out = tmp_path / "audit.html"
    result = qmlops(capsys, "audit", "--repo", str(work), "--format", "html", "--output", str(out))
    assert result.code == 0
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "<polyline" in html
    assert "Verified:" in html and "demo/tiny" in html
    for external in ("<script", "<link", "src=", "url(", "@import"):
        assert external not in html


# --- polling and Ctrl-C -------------------------------------------------------------------------------------


def test_run_polls_reacts_to_new_commits_and_stops_cleanly_on_ctrl_c(repos: Repos) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    work = repos.clone("work")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runner = subprocess.Popen(
        [sys.executable, "-m", "controller", "run", "--repo", str(work), "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        human = repos.clone("human")
        repos.commit_file(human, SPEC, tiny_spec(), "Add the tiny model")
        repos.push(human)
        for _ in range(600):  # the runner pulls the new spec, trains it and pushes its decisions
            if decisions(repos) == ["registered", "gate-passed", "promoted"]:
                break
            assert runner.poll() is None, runner.communicate()[0]
            time.sleep(0.2)
        assert decisions(repos) == ["registered", "gate-passed", "promoted"]
        runner.send_signal(signal.SIGINT)
        out, _ = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
    assert runner.returncode == 130, out
    assert "stopped" in out
    assert git(work, "status", "--porcelain") == ""


def test_a_schedule_that_comes_due_retrains_once_per_tick(repos: Repos, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    spec = tiny_spec().replace("    seed: 7\n", '    seed: 7\n    schedule: "0 3 * * *"\n')
    work = seeded(repos, spec=spec)
    now = [datetime(2025, 3, 1, 12, 0, tzinfo=UTC)]
    trainer = CountingTrainer()
    rec = Reconciler(Registry(work), trainer=trainer, checkpoint_root=tmp_path / "ckpt", clock=lambda: now[0])
    [outcome] = reconcile_all(rec)
    assert outcome.requeue_after == timedelta(hours=15).total_seconds()
    now[0] += timedelta(hours=10)  # 22:00, before the next 03:00
    reconcile_all(rec)
    assert trainer.calls == 1
    now[0] += timedelta(hours=6)  # 04:00 the next day: the 03:00 tick came due
    plan = rec.plan(observe(rec.registry.git, work / "specs").models[0][0])
    assert plan.action == "train" and "the schedule '0 3 * * *' came due at 2025-03-02T03:00:00Z" in plan.reason
    reconcile_all(rec)
    reconcile_all(rec)
    assert trainer.calls == 2
    assert [(e["kind"], e["version"]) for e in ledger(work)][3:] == [
        ("registered", 2),
        ("gate-passed", 2),
        ("promoted", 2),
    ]
