"""A spec repository with a bare remote whose tiny model was trained twice: version 2 is the champion.
Trained once per test module (real trainings on the statevector, real Git)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.engine.reconcile import Reconciler
from controller.engine.registry import Registry
from controller.runner.specs import observe
from tests.registry.repos import DEFAULT_PROMOTION, Repos, tiny_spec

SPEC = "specs/tiny.yaml"
MODEL = ("demo", "tiny")


@dataclass
class Trained:
    """The bare remote and a work clone (``ops``) that reconciles it."""

    repos: Repos
    ops: Path
    checkpoints: Path

    def reconcile(self) -> None:
        registry = Registry(self.ops)
        registry.sync()
        reconciler = Reconciler(registry, checkpoint_root=self.checkpoints)
        found = observe(registry.git, self.ops / "specs")
        assert not found.problems, [p.format() for p in found.problems]
        for observed, _ in found.models:
            reconciler.reconcile(observed)

    def pin(self, version: int) -> None:
        """Commit ``promotion.pin`` and reconcile: the controller records the rollback (or promotion) and pushes."""
        spec = tiny_spec(iterations=5, promotion=DEFAULT_PROMOTION + f"\n    pin: {version}")
        self.repos.commit_file(self.ops, SPEC, spec, f"Pin version {version}")
        self.reconcile()


def git_environment(home: Path, mp: pytest.MonkeyPatch) -> None:
    config = home / ".gitconfig"
    config.write_text("[init]\n\tdefaultBranch = main\n[user]\n\tname = Tester\n\temail = tester@example.com\n")
    mp.setenv("HOME", str(home))
    mp.setenv("XDG_CACHE_HOME", str(home / "cache"))
    mp.setenv("GIT_CONFIG_GLOBAL", str(config))
    mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_DIR"):
        mp.delenv(var, raising=False)


@pytest.fixture(scope="module", autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No user or system git configuration leaks into the tests; kept for the module (its repository is)."""
    with pytest.MonkeyPatch.context() as mp:
        git_environment(tmp_path_factory.mktemp("home"), mp)
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, isolated_git: None) -> Trained:
    base = tmp_path_factory.mktemp("trained")
    repos = Repos(base)
    ops = repos.clone("ops")
    made = Trained(repos, ops, base / "checkpoints")
    repos.commit_file(ops, SPEC, tiny_spec(), "Add the tiny model")
    repos.push(ops)
    made.reconcile()
    repos.commit_file(ops, SPEC, tiny_spec(iterations=5), "Retrain")
    made.reconcile()
    assert Registry(ops, remote=None).ledger(*MODEL).champion() == 2
    return made


@pytest.fixture
def work(trained: Trained, tmp_path: Path) -> Path:
    """A clone of the remote, as the module's trainings left it, for one test to change as it likes."""
    path = tmp_path / "work"
    shutil.copytree(trained.ops, path, symlinks=True)
    return path
