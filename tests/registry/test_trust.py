"""Trust that holds against someone with push access: the controller signs its commits with an SSH key,
the reconcile acts only on what the allowed signers vouch for, and ``audit --verify`` names every commit
that is not. Each attack from issue 12 is its own test, on real repositories with a bare remote and real
keys made by ssh-keygen."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from controller.engine.registry import versions as version_files
from controller.engine.registry.ledger import draft, entry_from_json
from tests.registry.repos import (
    DEFAULT_GOVERNANCE,
    DEFAULT_PROMOTION,
    Repos,
    allowed_signers,
    git,
    signing,
    ssh_key,
    tiny_spec,
    trust_flags,
)
from tests.validation.cli import Result, qmlops

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="signing needs OpenSSH's ssh-keygen"),
]

SPEC = "specs/tiny.yaml"
LEDGER = "registry/demo/tiny/ledger.jsonl"
CONTROLLER = "qmlops <qmlops@example.invalid>"
WAIT_FOR_ONE_APPROVAL = DEFAULT_PROMOTION + "\n    requiredApprovals: 1"


class Keys:
    """The controller's key, two approvers' keys and an outsider's, and the allowed-signers file
    (outside the repository) that lists all but the outsider."""

    def __init__(self, folder: Path) -> None:
        self.controller = ssh_key(folder, "qmlops@example.invalid")
        self.bob = ssh_key(folder, "bob@example.com")
        self.alice = ssh_key(folder, "alice@example.com")
        self.mallory = ssh_key(folder, "mallory@example.com")
        self.signers = allowed_signers(
            folder / "allowed_signers",
            {"qmlops@example.invalid": self.controller, "bob@example.com": self.bob, "alice@example.com": self.alice},
        )

    def run_args(self) -> list[str]:
        return trust_flags(self.controller, self.signers)


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


def seeded(repos: Repos, spec: str | None = None) -> Path:
    work = repos.clone("work")
    repos.commit_file(work, SPEC, spec or tiny_spec(), "Add the tiny model")
    repos.push(work)
    return work


def run(capsys: pytest.CaptureFixture[str], work: Path, *args: str) -> Result:
    return qmlops(capsys, "run", "--repo", str(work), "--once", *args)


def verify(capsys: pytest.CaptureFixture[str], work: Path, *args: str) -> Result:
    return qmlops(capsys, "audit", "--repo", str(work), "--verify", "--format", "json", *args)


def problems(result: Result) -> list[dict[str, Any]]:
    return [p for m in result.json()["models"] for p in m["verification"]["problems"]]


def kinds(work: Path) -> list[str]:
    return [json.loads(line)["kind"] for line in (work / LEDGER).read_text().splitlines()]


def forge_entry(
    repos: Repos, work: Path, kind: str, version: int, data: dict[str, Any], files: dict[str, str] | None = None
) -> str:
    """A well-formed ledger entry (chained, digested, with the controller's trailers) appended by a
    commit made under the controller's public identity, without its key."""
    lines = (work / LEDGER).read_text().splitlines()
    last = entry_from_json(json.loads(lines[-1]), len(lines))
    entry = draft(last, at=last.at, kind=kind, model="demo/tiny", version=version, message="forged", data=data)
    for relative, text in (files or {}).items():
        path = work / "registry/demo/tiny" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        git(work, "add", str(path))
    trailers = ("Qmlops-Model: demo/tiny", f"Qmlops-Version: {version}", f"Qmlops-Decision: {kind}")
    trailers += (f"Qmlops-Entry: {entry.digest}",)
    return repos.commit_file(
        work, LEDGER, "\n".join(lines) + "\n" + entry.to_line(), "qmlops", author=CONTROLLER, trailers=trailers
    )


def better_version(work: Path, number: int) -> str:
    """Version 1's manifest renumbered with accuracy 1.0 and a recomputed digest: a version file that
    looks like the controller's."""
    data = json.loads((work / "registry/demo/tiny/versions/1.json").read_text())
    data["version"] = number
    data["artifact"]["metrics"]["accuracy"] = 1.0
    data["digest"] = version_files.computed_digest(data)
    return json.dumps(data, indent=2)


# --- signed decisions ------------------------------------------------------------------------------


def test_the_controller_signs_every_commit_and_verify_checks_the_signatures(
    repos: Repos, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    first = run(capsys, work, *keys.run_args())
    assert first.code == 0, first.out + first.err
    assert kinds(work) == ["registered", "gate-passed", "promoted"]
    signed = git(
        work, "-c", f"gpg.ssh.allowedSignersFile={keys.signers}", "log", "--format=%G? %GS", "--", "registry"
    ).splitlines()
    assert signed == ["G qmlops@example.invalid"] * 3  # git's own verification agrees
    checked = verify(capsys, work, "--allowed-signers", str(keys.signers))
    assert checked.code == 0, checked.err
    assert checked.json()["models"][0]["verification"]["signatures"].startswith("checked against")
    unchecked = verify(capsys, work)
    assert unchecked.code == 0
    assert "signatures not checked (no allowed-signers file was given)" in unchecked.err


def test_a_forged_approval_entry_under_the_controllers_identity_is_refused_and_named(
    repos: Repos, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos, tiny_spec(promotion=WAIT_FOR_ONE_APPROVAL))
    assert run(capsys, work, *keys.run_args()).code == 0
    assert kinds(work) == ["registered", "gate-passed"]
    head = git(work, "rev-parse", "HEAD")
    sha = forge_entry(repos, work, "approved", 1, {"approver": "bob@example.com", "commit": head, "signed": True})
    refused = run(capsys, work, *keys.run_args())
    assert refused.code == 1
    assert "ledger entry 3 (approved version 1) was not recorded by a commit the controller signed" in refused.out
    assert kinds(work) == ["registered", "gate-passed", "approved"]  # nothing promoted on top of it
    named = verify(capsys, work, "--allowed-signers", str(keys.signers))
    assert named.code == 1
    found = problems(named)
    assert any(
        p["commit"] and p["commit"]["sha"] == sha and "not signed by the controller's key: unsigned" in p["message"]
        for p in found
    ), found


def test_a_forged_version_with_a_matching_registered_entry_is_refused_and_named(
    repos: Repos, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    assert run(capsys, work, *keys.run_args()).code == 0
    text = better_version(work, 2)
    digest = json.loads(text)["digest"]
    data = {"versionDigest": digest, "metrics": {"accuracy": 1.0}}
    sha = forge_entry(repos, work, "registered", 2, data, {"versions/2.json": text})
    refused = run(capsys, work, *keys.run_args())
    assert refused.code == 1 and "not recorded by a commit the controller signed" in refused.out
    assert "promoted" not in kinds(work)[3:]
    named = verify(capsys, work, "--allowed-signers", str(keys.signers))
    assert named.code == 1
    assert any(p["commit"] and p["commit"]["sha"] == sha for p in problems(named))


def test_a_version_file_without_its_own_registered_entry_is_never_gated_or_promoted(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    assert run(capsys, work).code == 0
    sha = repos.commit_file(
        work, "registry/demo/tiny/versions/2.json", better_version(work, 2), "v2", author="Eve <eve@example.com>"
    )
    again = run(capsys, work)
    assert again.code == 0, again.out
    assert kinds(work) == ["registered", "gate-passed", "promoted"]  # version 2 is not acted on
    plan = qmlops(capsys, "plan", "--repo", str(work))
    assert "version 1 is the champion" in plan.out
    named = verify(capsys, work)
    assert named.code == 1
    assert any(
        p["what"] == "version 2" and p["message"] == "no ledger entry registered it" and p["commit"]["sha"] == sha
        for p in problems(named)
    ), problems(named)


def test_unsigned_and_foreign_approvals_do_not_count_and_the_audit_says_why(
    repos: Repos, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos, tiny_spec(promotion=WAIT_FOR_ONE_APPROVAL))
    assert run(capsys, work, *keys.run_args()).code == 0
    approve = ["commit", "--quiet", "--allow-empty", "-m", "lgtm", "--trailer=Qmlops-Approve: demo/tiny@1"]
    git(work, *approve, "--author=Bob <bob@example.com>")  # unsigned
    git(work, *signing(keys.mallory), *approve, "--author=Bob <bob@example.com>")  # a key not listed
    git(work, *signing(keys.alice), *approve, "--author=Bob <bob@example.com>")  # alice's key, bob's name
    waiting = run(capsys, work, *keys.run_args())
    assert waiting.code == 0
    assert kinds(work) == ["registered", "gate-passed"]
    audit = qmlops(
        capsys, "audit", "--repo", str(work), "--format", "json", "--allowed-signers", str(keys.signers)
    ).json()
    reasons = [e["message"] for e in audit["models"][0]["timeline"] if e["kind"] == "approval-not-counted"]
    assert len(reasons) == 3, reasons
    assert "is unsigned" in reasons[0]
    assert "signed by a key not in the allowed signers" in reasons[1]
    assert "allowed signers list for alice@example.com, not for bob@example.com" in reasons[2]
    labels = [e["data"]["reason"] for e in audit["models"][0]["timeline"] if e["kind"] == "approval-not-counted"]
    assert labels == ["unsigned", "unknown-signer", "unknown-signer"]
    git(work, *signing(keys.bob), *approve, "--author=Bob <bob@example.com>")
    promoted = run(capsys, work, *keys.run_args())
    assert promoted.code == 0
    assert kinds(work)[2:] == ["approved", "promoted"]
    assert verify(capsys, work, "--allowed-signers", str(keys.signers)).code == 0


def test_signatures_are_required_from_signed_since_so_an_old_registry_adopts_signing(
    repos: Repos, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    assert run(capsys, work).code == 0  # unsigned history
    adopted = git(work, "rev-parse", "HEAD")
    repos.commit_file(work, SPEC, tiny_spec(iterations=5), "More iterations")
    refused = run(capsys, work, *keys.run_args())
    assert refused.code == 1 and "is unsigned" in refused.out
    since = ["--signed-since", adopted]
    assert run(capsys, work, *keys.run_args(), *since).code == 0
    assert kinds(work)[3:] == ["registered", "gate-passed", "promoted"]
    ok = verify(capsys, work, "--allowed-signers", str(keys.signers), *since)
    assert ok.code == 0, ok.err
    assert f"required after commit {adopted[:12]}" in ok.json()["models"][0]["verification"]["signatures"]
    strict = verify(capsys, work, "--allowed-signers", str(keys.signers))
    assert strict.code == 1
    assert all("unsigned" in p["message"] for p in problems(strict))


# --- nothing disappears unseen ----------------------------------------------------------------------------


def test_removing_a_model_and_its_registry_folder_is_named_with_the_commit(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    assert run(capsys, work).code == 0
    git(work, "rm", "-r", "--quiet", "registry/demo/tiny", SPEC)
    git(work, "commit", "--quiet", "--author=Eve <eve@example.com>", "-m", "cleanup")
    sha = git(work, "rev-parse", "HEAD")
    result = verify(capsys, work)
    assert result.code == 1, result.err
    found = problems(result)
    assert any(p["message"].startswith("the ledger was deleted") and p["commit"]["sha"] == sha for p in found), found


def test_a_version_file_that_points_outside_the_repository_is_tampering_not_a_crash(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    assert run(capsys, work).code == 0
    link = work / "registry/demo/tiny/versions/2.json"
    os.symlink("/etc/passwd", link)
    git(work, "add", str(link))
    git(work, "commit", "--quiet", "--author=Eve <eve@example.com>", "-m", "v2")
    sha = git(work, "rev-parse", "HEAD")
    result = verify(capsys, work)
    assert result.code == 1, result.err
    found = problems(result)
    assert any("symlink" in p["message"] and (p["commit"] or {}).get("sha") == sha for p in found), found


# --- bad input ------------------------------------------------------------------------------------------------


def test_unusable_keys_and_signers_files_are_refused_naming_the_flag_and_nothing_is_written(
    repos: Repos, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    head = git(work, "rev-parse", "HEAD")
    not_a_key = tmp_path / "not-a-key"
    not_a_key.write_text("hello\n")
    open_key = tmp_path / "open-key"
    shutil.copy(keys.controller, open_key)
    open_key.chmod(0o644)
    broken = tmp_path / "broken_signers"
    broken.write_text("bob@example.com ssh-ed25519 not-base64!!\n")
    inside = work / "allowed_signers"
    shutil.copy(keys.signers, inside)
    cases = {
        ("--signing-key", str(tmp_path / "missing")): "--signing-key: ",
        ("--signing-key", str(not_a_key)): "--signing-key: ",
        ("--signing-key", str(open_key)): "--signing-key: ",
        ("--allowed-signers", str(broken)): "--allowed-signers: ",
        ("--allowed-signers", str(inside)): "--allowed-signers: ",
        ("--allowed-signers", str(keys.signers), "--signed-since", "no-such-rev"): "--signed-since: ",
    }
    for args, flag in cases.items():
        result = run(capsys, work, *args)
        assert result.code == 2, (args, result.out, result.err)
        assert result.err.startswith(f"qmlops run: {flag}") and result.err.count("\n") == 1, result.err
        assert "Traceback" not in result.err
    broken_audit = verify(capsys, work, "--allowed-signers", str(broken))
    assert broken_audit.code == 2 and "--allowed-signers: " in broken_audit.err and "line 1" in broken_audit.err
    assert git(work, "rev-parse", "HEAD") == head
    assert not (work / "registry").exists()


# --- approvals worth their name ------------------------------------------------------------------------------


def approve(work: Path, author: str, *trailers: str) -> str:
    args = ["commit", "--quiet", "--allow-empty", "-m", "lgtm", f"--author={author}"]
    git(work, *args, *[f"--trailer={t}" for t in trailers])
    return git(work, "rev-parse", "HEAD")


def not_counted(capsys: pytest.CaptureFixture[str], work: Path) -> list[str]:
    audit = qmlops(capsys, "audit", "--repo", str(work), "--format", "json").json()
    return [e["message"] for e in audit["models"][0]["timeline"] if e["kind"] == "approval-not-counted"]


def test_under_separation_of_duties_the_author_of_the_spec_change_cannot_approve_it(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    governance = '    allowedBackends: ["local:*"]\n    approvers: [alice@example.com, bob@example.com]\n'
    governance += "    separationOfDuties: true"
    work = seeded(repos, tiny_spec(promotion=WAIT_FOR_ONE_APPROVAL, governance=governance))  # by Alice
    assert run(capsys, work).code == 0
    approve(work, "Alice <alice@example.com>", "Qmlops-Approve: demo/tiny@1")
    assert run(capsys, work).code == 0
    assert kinds(work) == ["registered", "gate-passed"]
    [reason] = not_counted(capsys, work)
    assert "governance.separationOfDuties: alice@example.com authored the spec change" in reason
    approve(work, "Bob <bob@example.com>", "Qmlops-Approve: demo/tiny@1")
    assert run(capsys, work).code == 0
    assert kinds(work)[2:] == ["approved", "promoted"]


def test_an_approval_of_another_digest_or_past_its_expiry_does_not_count(
    repos: Repos, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos, tiny_spec(promotion=WAIT_FOR_ONE_APPROVAL))
    assert run(capsys, work).code == 0
    digest = json.loads((work / "registry/demo/tiny/versions/1.json").read_text())["digest"]
    approve(work, "Bob <bob@example.com>", "Qmlops-Approve: demo/tiny@1 sha256:" + "0" * 64)
    approve(
        work, "Bob <bob@example.com>", "Qmlops-Approve: demo/tiny@1", "Qmlops-Approve-Expires: 2020-01-01T00:00:00Z"
    )
    assert run(capsys, work).code == 0
    assert kinds(work) == ["registered", "gate-passed"]
    reasons = not_counted(capsys, work)
    assert len(reasons) == 2, reasons
    assert "names digest sha256:000000000000" in reasons[0] and "version 1 is" in reasons[0]
    assert "expired at 2020-01-01T00:00:00Z" in reasons[1]
    approve(
        work,
        "Bob <bob@example.com>",
        f"Qmlops-Approve: demo/tiny@1 {digest}",
        "Qmlops-Approve-Expires: 2999-01-01T00:00:00Z",
    )
    assert run(capsys, work).code == 0
    assert kinds(work)[2:] == ["approved", "promoted"]
    approved = json.loads((work / LEDGER).read_text().splitlines()[2])
    assert approved["data"]["expires"] == "2999-01-01T00:00:00Z"


# --- retention: versions beyond maxVersions are retired, history keeps the proof --------------------------------


def retention_floor(tmp_path: Path, max_versions: int) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir(exist_ok=True)
    (folder / "floor.yaml").write_text(
        "apiVersion: qmlops.io/v1alpha1\nkind: QuantumPolicy\nmetadata: {name: keep-few}\n"
        f"spec:\n  floor:\n    retention: {{maxVersions: {max_versions}}}\n"
    )
    return folder


def three_versions(repos: Repos, capsys: pytest.CaptureFixture[str], work: Path, *args: str) -> None:
    for iterations in (4, 5, 6):  # each spec change trains a version, promoted by the default gates
        repos.commit_file(work, SPEC, tiny_spec(iterations=iterations), f"{iterations} iterations")
        trained = run(capsys, work, *args)
        assert trained.code == 0, trained.out + trained.err
    assert (
        kinds(work).count("registered") == 3
        and json.loads((work / LEDGER).read_text().splitlines()[-1])["version"] == 3
    )


def in_head(work: Path, relative: str) -> bool:
    return bool(git(work, "ls-tree", "--name-only", "HEAD", "--", relative))


@pytest.mark.slow
def test_versions_beyond_max_versions_are_retired_oldest_first_and_history_keeps_the_proof(
    repos: Repos, keys: Keys, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = repos.clone("work")
    three_versions(repos, capsys, work, *keys.run_args())
    floor = retention_floor(tmp_path, 2)
    head = git(work, "rev-parse", "HEAD")
    [planned] = qmlops(capsys, "plan", "--repo", str(work), "--policies", str(floor), "--output", "json").json()
    assert planned["action"] == "retire" and "retire version 1" in planned["reason"] and planned["changes"]
    assert git(work, "rev-parse", "HEAD") == head  # plan writes nothing
    retired = run(capsys, work, *keys.run_args(), "--policies", str(floor))
    assert retired.code == 0, retired.out + retired.err
    entry = json.loads((work / LEDGER).read_text().splitlines()[-1])
    assert (entry["kind"], entry["version"], entry["data"]["source"]) == ("retired", 1, "QuantumPolicy/keep-few")
    one = "registry/demo/tiny/versions/1.json"
    assert not in_head(work, one) and in_head(work, "registry/demo/tiny/versions/2.json")
    assert json.loads(git(work, "show", f"HEAD^:{one}"))["version"] == 1  # history keeps the proof
    assert "retiredVersions:\n- 1" in (work / "registry/demo/tiny/model.yaml").read_text()
    rows = tmp_path / "rows.csv"
    rows.write_text("petal_length,petal_width\n1.4,0.2\n")
    predicted = qmlops(capsys, "predict", "demo/tiny", "--repo", str(work), "--input", str(rows), "--version", "1")
    assert predicted.code == 2 and "version 1 was retired" in predicted.err, predicted.err
    checked = verify(capsys, work, "--allowed-signers", str(keys.signers))
    assert checked.code == 0, problems(checked)
    timeline = checked.json()["models"][0]["timeline"]
    assert [(e["kind"], e["version"]) for e in timeline if e["kind"] == "retired"] == [("retired", 1)]
    # the version table lists it too, marked retired, with the entry and the commit that retired it
    removed_by = git(work, "log", "-1", "--format=%H", "--", one)
    versions = checked.json()["models"][0]["versions"]
    assert [(v["version"], bool(v["retired"])) for v in versions] == [(1, True), (2, False), (3, False)]
    assert versions[0]["retired"]["commit"] == removed_by and versions[0]["retired"]["entry"] == entry["seq"]
    assert versions[0]["digest"] == entry["data"]["versionDigest"] and versions[0]["metrics"]["accuracy"] >= 0
    table = qmlops(capsys, "audit", "--repo", str(work)).out
    assert f"RETIRED {entry['at']}, retired by ledger entry {entry['seq']} (commit {removed_by[:12]})" in table
    assert table.index("      1  ") < table.index("      2  ")  # in number order, retired or not
    html = qmlops(capsys, "audit", "--repo", str(work), "--format", "html").out
    assert "<tr class='retired'><td><b>1</b> (retired)</td>" in html and removed_by[:12] in html
    # a retired version is never promoted again: a pin to it blocks; the champion and a pin are never retired
    pinned = tiny_spec(iterations=6).replace("    policy: auto\n", "    policy: auto\n    pin: 1\n")
    repos.commit_file(work, SPEC, pinned, "back to version 1")
    blocked = run(capsys, work, *keys.run_args())
    assert blocked.code == 0 and "promotion.pin: version 1 was retired" in blocked.out, blocked.out
    assert "rolled-back" not in kinds(work)
    keep_one = tiny_spec(iterations=6, governance=DEFAULT_GOVERNANCE + "\n    retention: {maxVersions: 1}")
    repos.commit_file(work, SPEC, keep_one.replace("    policy: auto\n", "    policy: auto\n    pin: 2\n"), "pin 2")
    assert run(capsys, work, *keys.run_args()).code == 0
    assert kinds(work)[-1] == "rolled-back" and kinds(work).count("retired") == 1  # 2 is pinned, 3 the newest
    assert in_head(work, "registry/demo/tiny/versions/2.json") and in_head(work, "registry/demo/tiny/versions/3.json")
    # a version file removed without a retired entry is still tampering
    git(work, "rm", "--quiet", "registry/demo/tiny/versions/3.json")
    git(work, "commit", "--quiet", "--author=Eve <eve@example.com>", "-m", "tidy up")
    named = verify(capsys, work)
    assert named.code == 1
    assert any(p["message"] == "version file deleted: versions are immutable" for p in problems(named)), problems(named)


@pytest.mark.slow
def test_a_forged_retirement_of_the_champion_is_refused_and_named(
    repos: Repos, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    work = seeded(repos)
    assert run(capsys, work, *keys.run_args()).code == 0
    digest = json.loads((work / "registry/demo/tiny/versions/1.json").read_text())["digest"]
    git(work, "rm", "--quiet", "registry/demo/tiny/versions/1.json")
    sha = forge_entry(repos, work, "retired", 1, {"versionDigest": digest, "maxVersions": 1, "source": "spec"})
    refused = run(capsys, work, *keys.run_args())
    assert refused.code == 1 and "not recorded by a commit the controller signed" in refused.out
    named = verify(capsys, work)  # even without signatures: the champion is never retired
    assert named.code == 1
    assert any(p["message"] == "is the champion but ledger entry 4 retired it" for p in problems(named)), problems(
        named
    )
    signed = verify(capsys, work, "--allowed-signers", str(keys.signers))
    assert any(p["commit"] and p["commit"]["sha"] == sha for p in problems(signed))
