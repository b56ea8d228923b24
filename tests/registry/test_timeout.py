"""A training that times out is a failure of that training: recorded once, not started again on every
reconcile, and tried again when its timeout changes, on real repositories with a bare remote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.engine import training
from controller.engine.reconcile import Reconciler
from controller.engine.registry import Registry
from controller.runner.specs import observe
from tests.registry.repos import Repos, tiny_spec

pytestmark = pytest.mark.slow

SPEC = "specs/tiny.yaml"


class SlowClockTrainer:
    """The real trainer on a clock that moves 1,000 s each time it is read (three reads a job)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, spec: Any, **kwargs: Any) -> Any:
        self.calls += 1
        now = [0.0]

        def clock() -> float:
            now[0] += 1000.0
            return now[0]

        return training.train(spec, clock=clock, **kwargs)


def with_timeout(timeout: str) -> str:
    return tiny_spec(iterations=6).replace("    seed: 7\n", f"    seed: 7\n    timeout: {timeout}\n", 1)


def test_a_timed_out_training_fails_once_and_is_retried_when_its_timeout_changes(repos: Repos, tmp_path: Path) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, with_timeout("1h"), "Add the tiny model")
    repos.push(work)
    trainer = SlowClockTrainer()
    rec = Reconciler(Registry(work), trainer=trainer, checkpoint_root=tmp_path / "ckpt")

    def reconcile() -> Any:
        rec.registry.sync()
        ((observed, _),) = observe(rec.registry.git, work / "specs").models
        return rec.reconcile(observed)

    first = reconcile()
    assert first.status.phase == "Failed"
    assert first.status.message is not None
    assert first.status.message.startswith("TrainingTimedOut: training.timeout: the training has run 1h23m")
    assert [d.kind for d in first.decisions] == ["failed"]

    again = reconcile()  # the same training key: its failure stands, nothing is trained
    assert trainer.calls == 1 and again.decisions == []
    assert again.status.phase == "Failed" and "change the spec to retry" in (again.status.message or "")

    repos.commit_file(work, SPEC, with_timeout("10h"), "More time")
    repos.push(work)
    done = reconcile()
    assert trainer.calls == 2
    assert [d.kind for d in done.decisions][:1] == ["registered"]
    assert done.status.latest_version is not None and done.status.latest_version.version == 1


def test_a_new_timeout_does_not_retrain_a_trained_model(repos: Repos, tmp_path: Path) -> None:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, with_timeout("10h"), "Add the tiny model")
    repos.push(work)
    trainer = SlowClockTrainer()
    rec = Reconciler(Registry(work), trainer=trainer, checkpoint_root=tmp_path / "ckpt")
    rec.registry.sync()
    ((observed, _),) = observe(rec.registry.git, work / "specs").models
    assert rec.reconcile(observed).status.latest_version is not None
    repos.commit_file(work, SPEC, with_timeout("12h"), "Even more time")
    repos.push(work)
    rec.registry.sync()
    ((observed, _),) = observe(rec.registry.git, work / "specs").models
    assert rec.reconcile(observed).decisions == [] and trainer.calls == 1
