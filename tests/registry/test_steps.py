"""The engine as steps: ``plan`` runs the very steps ``reconcile`` runs (with a dry run for effects), so
for every repository state what plan says is what run then does; and each training has its own
workspace, so several trainings of one model coexist."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.api.quantummodel import Phase
from controller.engine import training
from controller.engine.decisions import LedgerKind, PlanAction
from controller.engine.reconcile import Due, Observed, Plan, Reconciler, Workspaces
from controller.engine.registry import Registry
from controller.engine.registry.git import Git
from controller.runner.specs import observe
from tests.registry.repos import DEFAULT_PROMOTION, Repos, git, tiny_spec
from tests.registry.test_loop import SPEC, CountingTrainer, Crash, ledger, seeded

pytestmark = pytest.mark.slow

IMPOSSIBLE_GATE = """\
    policy: auto
    gates:
      - {metric: accuracy, min: 1.01}"""


class FailingTrainer:
    calls = 0

    def __call__(self, spec: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise RuntimeError("the backend refused the job")


@dataclass
class World:
    repos: Repos
    work: Path
    rec: Reconciler
    trainer: Any

    def commit(self, text: str, message: str = "Change the spec") -> None:
        self.repos.commit_file(self.work, SPEC, text, message)

    def approve(self, version: int, author: str = "Bob <bob@example.com>") -> None:
        trailer = f"--trailer=Qmlops-Approve: demo/tiny@{version}"
        git(self.work, "commit", "--quiet", "--allow-empty", f"--author={author}", "-m", "lgtm", trailer)

    def observed(self) -> Observed:
        self.rec.registry.sync()
        found = observe(self.rec.registry.git, self.work / "specs")
        assert not found.problems, [p.format() for p in found.problems]
        return found.models[0][0]


Move = Callable[[World], None]


def check_plan_then_run(world: World) -> tuple[Plan, list[LedgerKind]]:
    """Plan, then run: what run did must be what plan said, and the run reaches a state that a second
    plan and run leave alone."""
    plan = world.rec.plan(world.observed())
    trained_before = world.trainer.calls
    outcome = world.rec.reconcile(world.observed())
    trained = world.trainer.calls > trained_before
    kinds = [d.kind for d in outcome.decisions]
    phase = outcome.status.phase
    assert plan.changes == (trained or bool(kinds)), (plan, kinds, trained)
    if plan.action is PlanAction.TRAIN:
        assert trained, plan
        assert kinds[:1] in ([LedgerKind.REGISTERED], [LedgerKind.FAILED]), kinds
    elif plan.action is PlanAction.REGISTER:
        assert not trained and kinds[0] is LedgerKind.REGISTERED, kinds
    elif plan.action is PlanAction.PROMOTE:
        assert not trained and kinds[-1] is LedgerKind.PROMOTED and outcome.decisions[-1].version == plan.version
    elif plan.action is PlanAction.ROLLBACK:
        assert not trained and kinds[-1] is LedgerKind.ROLLED_BACK and outcome.decisions[-1].version == plan.version
    elif plan.action is PlanAction.BLOCK:
        assert not trained and kinds in ([], [LedgerKind.BLOCKED]) and phase is Phase.BLOCKED, (kinds, phase)
    elif plan.action is PlanAction.WAIT:
        assert not trained and phase is Phase.EVALUATING and not set(kinds) & {LedgerKind.PROMOTED}, kinds
    elif plan.action is PlanAction.SUSPEND:
        assert not trained and kinds == [] and phase is Phase.SUSPENDED
    else:
        assert plan.action is PlanAction.NOTHING
        assert not trained and not set(kinds) & {LedgerKind.PROMOTED, LedgerKind.ROLLED_BACK}, kinds
    again = world.rec.plan(world.observed())
    assert not again.changes, again
    assert world.rec.reconcile(world.observed()).decisions == []
    return plan, kinds


def spec_change(iterations: int) -> Move:
    return lambda w: w.commit(tiny_spec(iterations=iterations))


def pinned(version: int) -> Move:
    return lambda w: w.commit(tiny_spec(iterations=5, promotion=DEFAULT_PROMOTION + f"\n    pin: {version}"))


def suspended(w: World) -> None:
    w.commit(tiny_spec().replace("spec:\n", "spec:\n  suspend: true\n", 1))


def outside_governance(w: World) -> None:
    w.commit(tiny_spec().replace("backend: local:statevector", "backend: fake:manila"))


def needs_approval(w: World) -> None:
    w.commit(tiny_spec(promotion=DEFAULT_PROMOTION + "\n    requiredApprovals: 1"))


def impossible_gate(w: World) -> None:
    w.commit(tiny_spec(promotion=IMPOSSIBLE_GATE))


def nothing(w: World) -> None:
    pass


# each scenario: the moves made to the repository, and the action plan names after each move
SCENARIOS: dict[str, list[tuple[Move, PlanAction]]] = {
    "fresh": [(nothing, PlanAction.TRAIN)],
    "spec changed": [(nothing, PlanAction.TRAIN), (spec_change(5), PlanAction.TRAIN)],
    "gates failed": [(impossible_gate, PlanAction.TRAIN), (nothing, PlanAction.NOTHING)],
    "waiting for an approval": [
        (needs_approval, PlanAction.TRAIN),
        (nothing, PlanAction.WAIT),
        (lambda w: w.approve(1), PlanAction.PROMOTE),
    ],
    "pin": [
        (nothing, PlanAction.TRAIN),
        (spec_change(5), PlanAction.TRAIN),
        (pinned(1), PlanAction.ROLLBACK),
        (pinned(9), PlanAction.BLOCK),
        (pinned(2), PlanAction.PROMOTE),
    ],
    "suspend": [(suspended, PlanAction.SUSPEND)],
    "blocked by governance": [(outside_governance, PlanAction.BLOCK), (nothing, PlanAction.BLOCK)],
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_plan_says_what_run_then_does(repos: Repos, tmp_path: Path, scenario: str) -> None:
    work = seeded(repos)
    trainer = CountingTrainer()
    world = World(repos, work, Reconciler(Registry(work), trainer=trainer, checkpoint_root=tmp_path / "ckpt"), trainer)
    for move, expected in SCENARIOS[scenario]:
        move(world)
        plan, _ = check_plan_then_run(world)
        assert plan.action is expected, plan


def test_plan_and_run_agree_on_a_failed_training_and_on_one_waiting_to_be_registered(
    repos: Repos, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = seeded(repos)
    failing = FailingTrainer()
    world = World(repos, work, Reconciler(Registry(work), trainer=failing, checkpoint_root=tmp_path / "ckpt"), failing)
    plan, kinds = check_plan_then_run(world)
    assert (plan.action, kinds) == (PlanAction.TRAIN, [LedgerKind.FAILED])
    assert world.rec.plan(world.observed()).action is PlanAction.NOTHING  # failed until the spec changes

    trainer = CountingTrainer()
    world.rec, world.trainer = Reconciler(Registry(work), trainer=trainer, checkpoint_root=tmp_path / "ckpt"), trainer
    world.commit(tiny_spec(iterations=5))
    monkeypatch.setattr(Git, "commit", lambda *_, **__: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):  # trained; the process dies before the version is committed
        world.rec.reconcile(world.observed())
    monkeypatch.undo()
    world.rec.registry.discard_uncommitted("demo", "tiny")
    plan, kinds = check_plan_then_run(world)
    assert plan.action is PlanAction.REGISTER and kinds[0] is LedgerKind.REGISTERED
    assert trainer.calls == 1, "the finished training was registered, not trained again"


# --- workspaces keyed by training ------------------------------------------------------------------------


def cell(workspaces: Workspaces, key: str) -> Path:
    """A pipeline cell's training of the same model, in its own workspace, with a checkpoint."""
    workspace = workspaces.of(key)
    workspace.begin(Due("a pipeline cell", key, "sha256:cell-spec", "sha256:cell-data"), owner="pipeline")
    (workspace.checkpoint_dir / "state.json").write_text('{"iteration": 3}')
    return workspace.checkpoint_dir / "state.json"


def test_two_trainings_of_one_model_keep_separate_workspaces(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    trainer = CountingTrainer()
    rec = Reconciler(Registry(work), trainer=trainer, checkpoint_root=tmp_path / "ckpt")
    workspaces = rec.workspaces("demo", "tiny")
    other = cell(workspaces, "0123456789abcdef")
    observed = observe(rec.registry.git, work / "specs").models[0][0]
    rec.reconcile(observed)
    assert trainer.calls == 1 and [e["kind"] for e in ledger(work)] == ["registered", "gate-passed", "promoted"]
    assert other.read_text() == '{"iteration": 3}', "the model's training wiped another training's checkpoint"
    assert [w.key for w in workspaces.all()] == ["0123456789abcdef"], "the registered training's folder stays"


def test_a_training_no_longer_due_is_swept_but_never_one_in_progress(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    trainer = CountingTrainer()
    rec = Reconciler(Registry(work), trainer=trainer, checkpoint_root=tmp_path / "ckpt")
    workspaces = rec.workspaces("demo", "tiny")
    other = cell(workspaces, "0123456789abcdef")

    def observed() -> Observed:
        return observe(rec.registry.git, work / "specs").models[0][0]

    seen: list[Any] = []
    with pytest.raises(training.TrainingStopped):  # a training interrupted after one iteration
        rec.reconcile(observed(), on_progress=seen.append, should_stop=lambda: bool(seen))
    (interrupted,) = [w for w in workspaces.all() if w.key != "0123456789abcdef"]
    assert any(interrupted.checkpoint_dir.iterdir())
    repos.commit_file(work, SPEC, tiny_spec(iterations=5), "The spec moves on")

    held, release = threading.Event(), threading.Event()

    def train_elsewhere() -> None:  # another process still trains the old spec's training
        with interrupted.hold():
            held.set()
            release.wait(60)

    thread = threading.Thread(target=train_elsewhere)
    thread.start()
    try:
        assert held.wait(10)
        rec.reconcile(observed())
        assert interrupted.folder.exists(), "a training in progress was swept"
    finally:
        release.set()
        thread.join()
    rec.reconcile(observed())
    assert not interrupted.folder.exists(), "the model's training that is no longer due outlived the reconcile"
    assert other.exists(), "another kind's training is not the model's to sweep"
    assert trainer.calls == 1 and [e["kind"] for e in ledger(work)] == ["registered", "gate-passed", "promoted"]


def test_a_workspace_of_the_layout_before_keys_is_resumed_under_its_key(repos: Repos, tmp_path: Path) -> None:
    work = seeded(repos)
    trainer = CountingTrainer()
    rec = Reconciler(Registry(work), trainer=trainer, checkpoint_root=tmp_path / "ckpt")
    observed = observe(rec.registry.git, work / "specs").models[0][0]
    seen: list[Any] = []
    with pytest.raises(training.TrainingStopped):
        rec.reconcile(observed, on_progress=seen.append, should_stop=lambda: bool(seen))
    (kept,) = rec.workspaces("demo", "tiny").all()
    model_folder = kept.folder.parent
    for name in ("checkpoint", "training.json"):  # as an operator pod of the previous release left it
        (kept.folder / name).rename(model_folder / name)
    shutil.rmtree(kept.folder)
    plan = rec.plan(observed)
    assert plan.action is PlanAction.TRAIN and "resuming from its checkpoint" in plan.reason
