"""Containment on real repositories: a symlink in the spec repository can neither read Git's internals
(and publish them) nor make the registry write outside the work tree."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from controller.api import QuantumModel
from controller.engine.containment import OutsideWorkTree, check_found_file, inside_work_tree
from controller.engine.decisions import LedgerKind
from controller.engine.reconcile import Observed, Reconciler
from controller.engine.registry import Registry, RegistryError
from tests.registry.repos import Repos, git, tiny_spec
from tests.validation.cli import qmlops

TOKEN = "c2VjcmV0OnRva2Vu"  # what an extraheader in .git/config carries (base64 of secret:token)
LEAK_SPEC = tiny_spec().replace(
    "source: builtin:iris\n    features: [petal_length, petal_width]\n    classes: [0, 1]",
    'source: file:data/leak.csv\n    target: "[core]"\n    classes: [0, 1]',
)


def remote_history(repos: Repos) -> str:
    """Everything the remote holds: every commit's message and patch on every ref."""
    return git(repos.remote, "log", "--all", "-p", "--format=%an%n%B")


def test_a_dataset_symlinked_into_git_is_refused_by_validate_and_run_and_never_published(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    git(work, "config", "http.https://git.example.com/.extraheader", f"AUTHORIZATION: basic {TOKEN}")
    (work / "data").mkdir()
    os.symlink("../.git/config", work / "data" / "leak.csv")
    (work / "specs").mkdir()
    (work / "specs" / "tiny.yaml").write_text(LEAK_SPEC)
    git(work, "add", "data/leak.csv", "specs/tiny.yaml")
    git(work, "commit", "--quiet", "-m", "a dataset")
    repos.push(work)

    checked = qmlops(capsys, "validate", str(work / "specs"))
    assert checked.code == 1
    assert "spec.dataset.source: file:data/leak.csv leads into .git" in checked.out, checked.out
    ran = qmlops(capsys, "run", "--repo", str(work), "--once")
    assert ran.code == 1
    assert "spec.dataset.source: file:data/leak.csv leads into .git" in ran.out, ran.out
    for text in (checked.out + checked.err, ran.out + ran.err, remote_history(repos)):
        assert TOKEN not in text
        assert "extraheader" not in text.lower()
        assert "repositoryformatversion" not in text


def test_a_reconcile_given_the_model_directly_records_the_refusal_not_the_file(repos: Repos, tmp_path: Path) -> None:
    """The operator's path: the model comes from the cluster, not from validate; the training's own
    check refuses the file, and the failure that reaches the ledger and the remote names the field only."""
    work = repos.clone("work")
    git(work, "config", "http.https://git.example.com/.extraheader", f"AUTHORIZATION: basic {TOKEN}")
    (work / "data").mkdir()
    os.symlink("../.git/config", work / "data" / "leak.csv")
    git(work, "add", "data/leak.csv")
    git(work, "commit", "--quiet", "-m", "a dataset")
    repos.push(work)
    model = QuantumModel.model_validate(YAML(typ="safe").load(LEAK_SPEC))
    reconciler = Reconciler(Registry(work), checkpoint_root=tmp_path / "checkpoints")
    outcome = reconciler.reconcile(Observed(model=model))
    reconciler.registry.publish()
    assert outcome.status.message == (
        "the training data cannot be prepared: DatasetError: dataset.source: file:data/leak.csv leads into .git "
        "(through a symlink): Git's own files are never read"
    )
    assert [d.kind for d in outcome.decisions] == [LedgerKind.FAILED]
    history = remote_history(repos)
    assert "dataset.source: file:data/leak.csv leads into .git" in history
    assert TOKEN not in history and "extraheader" not in history.lower()


def test_a_symlinked_registry_namespace_is_refused_and_nothing_is_written_outside(
    repos: Repos, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    work = repos.clone("work")
    (work / "registry").mkdir()
    os.symlink(outside, work / "registry" / "demo")
    repos.commit_file(work, "specs/tiny.yaml", tiny_spec(), "Add the tiny model")  # commits the symlink too
    git(work, "add", "registry/demo")
    git(work, "commit", "--quiet", "-m", "a registry folder elsewhere")
    repos.push(work)
    before = git(repos.remote, "rev-parse", "main")

    ran = qmlops(capsys, "run", "--repo", str(work), "--once")
    assert ran.code == 1
    assert "registry/demo is a symlink: the controller writes only into real folders" in ran.out, ran.out
    assert list(outside.iterdir()) == []
    assert git(repos.remote, "rev-parse", "main") == before
    assert git(work, "status", "--porcelain") == ""


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("registry", "elsewhere"),  # the registry folder itself
        ("registry/demo/tiny", "../../elsewhere"),  # refused though it stays inside: writes go to real folders
        ("registry/demo/tiny/ledger.jsonl", "../../../.git/config"),
    ],
)
def test_the_registry_writes_only_into_real_folders(repos: Repos, link: str, target: str) -> None:
    work = repos.clone("work")
    (work / "elsewhere").mkdir()
    (work / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, work / link)
    registry = Registry(work, remote=None)
    config = (work / ".git" / "config").read_bytes()
    with pytest.raises(RegistryError, match=r"is a symlink: the controller writes only into real folders"):
        registry.record("demo", "tiny", at="2026-01-01T00:00:00Z", kind=LedgerKind.FAILED, version=None, message="x")
    with pytest.raises(RegistryError, match=r"is a symlink"):
        registry.ledger("demo", "tiny")
    assert list((work / "elsewhere").iterdir()) == []
    assert (work / ".git" / "config").read_bytes() == config


def test_registry_paths_named_git_in_any_case_are_refused(repos: Repos) -> None:
    registry = Registry(repos.clone("work"), remote=None, root="registry/.GIT")
    with pytest.raises(RegistryError, match=r"is inside \.git"):
        registry.record("demo", "tiny", at="2026-01-01T00:00:00Z", kind=LedgerKind.FAILED, version=None, message="x")


# --- the helper itself --------------------------------------------------------------------------------


def test_symlinks_are_followed_only_while_they_stay_inside_and_out_of_git(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config").write_text("[core]\n")
    (root / "data").mkdir()
    (root / "data" / "real.csv").write_text("a,b\n")
    (tmp_path / "outside.csv").write_text("a,b\n")
    os.symlink("real.csv", root / "data" / "alias.csv")
    os.symlink("../.git/config", root / "data" / "config.csv")
    os.symlink(".git", root / "gitdir")
    os.symlink(tmp_path / "outside.csv", root / "data" / "outside.csv")
    os.symlink(tmp_path, root / "up")

    assert inside_work_tree(root, "data/alias.csv") == (root / "data" / "real.csv").resolve()
    assert inside_work_tree(root, "data/new.csv") == (root / "data" / "new.csv").resolve()  # need not exist
    refused = {
        "data/config.csv": "leads into .git (through a symlink)",
        "gitdir/config": "leads into .git (through a symlink)",
        ".git/config": "is inside .git",
        "data/../.Git/config": "is inside .git",
        "data/outside.csv": "leads outside the repository",
        "up/outside.csv": "leads outside the repository",
        "../outside.csv": "leads outside the repository",
        str(tmp_path / "outside.csv"): "is an absolute path",
    }
    for relative, reason in refused.items():
        with pytest.raises(OutsideWorkTree) as raised:
            inside_work_tree(root, relative)
        assert raised.value.reason.startswith(reason), (relative, raised.value)
    with pytest.raises(OutsideWorkTree, match=r"^data/alias.csv is a symlink"):
        inside_work_tree(root, "data/alias.csv", symlinks=False)
    with pytest.raises(OutsideWorkTree, match=r"climbs out"):
        inside_work_tree(root, "data/../data/real.csv", symlinks=False)


def test_a_spec_file_symlinked_out_of_its_repository_is_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / ".git" / "config.yaml").write_text("token: ghp_abcdefghijklmnopqrstuvwxyz0123456789\n")
    (tmp_path / "private.yaml").write_text("password: hunter2\n")
    (root / "specs").mkdir()
    os.symlink("../.git/config.yaml", root / "specs" / "git.yaml")
    os.symlink(tmp_path / "private.yaml", root / "specs" / "private.yaml")
    os.symlink(tmp_path, root / "elsewhere")

    with pytest.raises(OutsideWorkTree):
        check_found_file(root / "specs" / "git.yaml")
    result = qmlops(capsys, "validate", str(root / "specs"), str(root / "elsewhere" / "private.yaml"))
    assert result.code == 2
    assert result.lines == [
        f"{root}/elsewhere/private.yaml:1:1: refused: elsewhere/private.yaml leads outside the repository",
        f"{root}/specs/git.yaml:1:1: refused: specs/git.yaml leads into .git (through a symlink): "
        "Git's own files are never read",
        f"{root}/specs/private.yaml:1:1: refused: specs/private.yaml leads outside the repository",
    ]
    assert "hunter2" not in result.out + result.err and "ghp_" not in result.out + result.err
