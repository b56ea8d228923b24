"""Git-native approvals: commits by listed approvers with a Qmlops-Approve trailer, signed where asked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from controller.engine.registry import Provenance, Registry
from controller.engine.registry import versions as version_files
from controller.engine.registry.approvals import Approval, approval_trailers, judge
from controller.engine.registry.trust import AllowedSigners, Trust
from tests.registry.repos import Repos, allowed_signers, git, ssh_key

APPROVERS = ["alice@example.com", "bob@example.com"]


def _register(registry: Registry) -> None:
    """A version manifest for the approvals to point at (its artifact does not matter here)."""
    manifest = version_files.manifest(
        namespace="demo",
        name="m",
        number=1,
        registered_at="2025-01-01T00:00:00Z",
        source=Provenance(None, None, None, None),
        spec_digest="sha256:0",
        dataset_digest="sha256:0",
        artifact={"metrics": {"accuracy": 0.9}},
        artifact_digest="sha256:0",
    )
    files = {version_files.file_name(1): version_files.encode(manifest)}
    registry.record("demo", "m", at="2025-01-01T00:00:00Z", kind="registered", version=1, message="v1", files=files)


def _registry_with_version(repos: Repos) -> tuple[Registry, Path]:
    work = repos.clone("work")
    registry = Registry(work)
    _register(registry)
    return registry, work


def _approve(work: Path, author: str, value: str = "demo/m@1", *, sign: bool = False) -> str:
    args = [
        "commit",
        "--quiet",
        "--allow-empty",
        f"--author={author}",
        "-m",
        "approve",
        f"--trailer=Qmlops-Approve: {value}",
    ]
    if sign:
        args.insert(1, "-S")
    git(work, *args)
    return git(work, "rev-parse", "HEAD")


def _judged(registry: Registry, *, require_signed: bool = False) -> list[Approval]:
    return [
        judge(
            registry.git,
            commit,
            version=version,
            version_path=registry.version_path(ns, name, version),
            approvers=APPROVERS,
            require_signed=require_signed,
            controller_email=registry.identity.email,
            signature=registry.signature(commit),
        )
        for commit, ns, name, version in approval_trailers(registry.git)
    ]


def test_a_listed_approver_approves_a_version_that_exists(repos: Repos) -> None:
    registry, work = _registry_with_version(repos)
    sha = _approve(work, "Bob <Bob@Example.com>")
    [approval] = _judged(registry)
    assert approval.counts and approval.approver == "bob@example.com" and approval.commit == sha


def test_approvals_that_do_not_count_say_why(repos: Repos) -> None:
    work = repos.clone("work")
    registry = Registry(work)
    early = _approve(work, "Bob <bob@example.com>")  # before version 1 exists
    _register(registry)
    _approve(work, "Eve <eve@example.com>")
    _approve(work, "qmlops <qmlops@example.invalid>")
    _approve(work, "Bob <bob@example.com>", "demo/m@1 with extra words")  # not a trailer value we read
    reasons = [(a.approver, a.counts, a.reason) for a in _judged(registry)]
    assert reasons == [
        ("bob@example.com", False, f"version 1 did not exist in commit {early[:12]}"),
        ("eve@example.com", False, "eve@example.com is not listed in governance.approvers"),
        ("qmlops@example.invalid", False, "the controller cannot approve"),
    ]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is needed to sign commits with SSH keys")
def test_signed_approvals_with_ssh_keys(repos: Repos, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    people = {f"{person}@example.com": ssh_key(keys, f"{person}@example.com") for person in ("alice", "bob")}
    signers = allowed_signers(keys / "allowed_signers", people)
    registry, work = _registry_with_version(repos)
    unchecked = Registry(work)
    registry = Registry(work, trust=Trust(AllowedSigners.read(signers)))
    git(work, "config", "gpg.format", "ssh")
    git(work, "config", "user.signingkey", str(people["bob@example.com"]))
    _approve(work, "Bob <bob@example.com>", sign=True)  # signed by its author
    _approve(work, "Alice <alice@example.com>", sign=True)  # signed with bob's key, authored as alice
    _approve(work, "Alice <alice@example.com>")  # not signed
    judged = _judged(registry, require_signed=True)
    assert [(a.approver, a.counts) for a in judged] == [
        ("bob@example.com", True),
        ("alice@example.com", False),
        ("alice@example.com", False),
    ]
    assert "allowed signers list for bob@example.com, not for alice@example.com" in judged[1].reason
    assert "unsigned" in judged[2].reason
    # without an allowed-signers file no signature can be checked: a required one never counts
    assert [a.counts for a in _judged(unchecked, require_signed=True)] == [False, False, False]
    assert "no allowed-signers file" in _judged(unchecked, require_signed=True)[0].reason
    # without the requirement the unsigned approval counts, and the signed one is marked as signed
    relaxed = _judged(registry)
    assert [a.counts for a in relaxed] == [True, True, True]
    assert [a.signed for a in relaxed] == [True, False, False]


@pytest.mark.slow
def test_a_recorded_approval_stops_counting_at_its_expiry_when_promotion_comes(repos: Repos, tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from controller.engine.reconcile import Reconciler
    from controller.runner.specs import observe
    from tests.registry.repos import DEFAULT_PROMOTION, tiny_spec

    work = repos.clone("work")
    spec = tiny_spec(promotion=DEFAULT_PROMOTION + "\n    requiredApprovals: 2")
    repos.commit_file(work, "specs/tiny.yaml", spec, "tiny")
    now = [datetime.now(UTC)]
    rec = Reconciler(Registry(work), checkpoint_root=tmp_path / "ckpt", clock=lambda: now[0])

    def reconcile() -> str:
        rec.registry.sync()
        [(observed, _)] = observe(rec.registry.git, work / "specs").models
        rec.reconcile(observed)
        return rec.plan(observed).reason

    reconcile()  # version 1 registered, its gates passed: it waits for two approvals
    expires = (now[0] + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    git(work, "commit", "--quiet", "--allow-empty", "--author=Bob <bob@example.com>", "-m", "approve",
        "--trailer=Qmlops-Approve: demo/tiny@1", f"--trailer=Qmlops-Approve-Expires: {expires}")  # fmt: skip
    assert "1 of 2" in reconcile()  # recorded while it holds
    now[0] += timedelta(hours=2)  # Bob's approval has expired by the time the second one comes
    _approve(work, "Alice <alice@example.com>", "demo/tiny@1")
    waiting = reconcile()
    ledger = rec.registry.ledger("demo", "tiny")
    assert [e.kind for e in ledger.entries][-2:] == ["approved", "approved"]
    assert ledger.champion() is None
    assert "1 of 2" in waiting and "1 recorded approval expired" in waiting, waiting
