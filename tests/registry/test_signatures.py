"""SSH signatures checked in process: they agree with git's own verification for every key type the
allowed-signers file may list, and a file that does not parse is refused naming its line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from controller.engine.registry.git import Git
from controller.engine.registry.trust import (
    AllowedSigners,
    SignatureState,
    Trust,
    TrustError,
    check_signing_key,
    judge_signature,
)
from tests.registry.repos import Repos, allowed_signers, git, ssh_key

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="signing needs OpenSSH's ssh-keygen")


@pytest.mark.parametrize("kind", ["ed25519", "rsa", "ecdsa"])
def test_a_signed_commit_verifies_like_git_says_and_a_rewritten_one_does_not(
    repos: Repos, tmp_path: Path, kind: str
) -> None:
    key = ssh_key(tmp_path / "keys", "bob@example.com", kind)
    signers = AllowedSigners.read(allowed_signers(tmp_path / "signers", {"bob@example.com": key}))
    work = repos.clone("work")
    sha = repos.commit_file(work, "a.txt", "a\n", "signed", author="Bob <bob@example.com>", signing_key=key)
    assert git(work, "-c", f"gpg.ssh.allowedSignersFile={tmp_path / 'signers'}", "log", "-1", "--format=%G?") == "G"
    raw = Git(work).commit_objects([sha])[sha]
    good = judge_signature(signers, raw)
    assert good.state is SignatureState.GOOD and good.by("bob@example.com") and not good.by("alice@example.com")
    forged = raw.replace(b"\n\nsigned", b"\n\nsigned (and changed)")
    assert judge_signature(signers, forged).state is SignatureState.BAD
    unsigned = repos.commit_file(work, "b.txt", "b\n", "plain", author="Bob <bob@example.com>")
    assert judge_signature(signers, Git(work).commit_objects([unsigned])[unsigned]).state is SignatureState.UNSIGNED


def test_a_key_the_file_does_not_list_and_commits_before_signed_since(repos: Repos, tmp_path: Path) -> None:
    bob = ssh_key(tmp_path / "keys", "bob@example.com")
    mallory = ssh_key(tmp_path / "keys", "mallory@example.com")
    signers = AllowedSigners.read(allowed_signers(tmp_path / "signers", {"bob@example.com": bob}))
    work = repos.clone("work")
    old = repos.commit_file(work, "a.txt", "a\n", "before signing")
    new = repos.commit_file(work, "b.txt", "b\n", "by mallory", signing_key=mallory)
    repo = Git(work)
    found = Trust(signers, signed_since=old).signatures(repo, [old, new])
    assert found[old].state is SignatureState.EXEMPT and found[old].by("bob@example.com")
    assert found[new].state is SignatureState.UNKNOWN_KEY
    assert found[new].describe("bob@example.com") == "signed by a key not in the allowed signers"
    assert Trust(signers).signature(repo, old).state is SignatureState.UNSIGNED


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("bob@example.com\n", "line 1: expected"),
        ("# only a comment\n", "lists no signer"),
        ("bob@example.com ssh-ed25519 not-base64!!\n", "line 1: the key is not valid base64"),
        ("bob@example.com ssh-dss AAAA\n", "line 1: key type 'ssh-dss'"),
        ("bob@example.com cert-authority ssh-ed25519 AAAA\n", "line 1: option 'cert-authority' is not supported"),
        ('bob@example.com valid-after="tomorrow" ssh-ed25519 AAAA\n', "line 1: time 'tomorrow'"),
    ],
)
def test_an_allowed_signers_file_that_does_not_parse_names_its_line(text: str, why: str) -> None:
    with pytest.raises(TrustError, match="signers") as err:
        AllowedSigners.parse(text, "signers")
    assert why in str(err.value)


def test_a_signing_key_is_checked_before_it_is_used(tmp_path: Path) -> None:
    key = ssh_key(tmp_path / "keys", "qmlops@example.invalid")
    assert check_signing_key(key).startswith("ssh-ed25519 ")
    public = Path(str(key) + ".pub")
    with pytest.raises(TrustError, match="not an SSH private key"):
        check_signing_key(public)
    with pytest.raises(TrustError, match="no such file"):
        check_signing_key(tmp_path / "missing")
    locked = tmp_path / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(locked)], check=True)
    with pytest.raises(TrustError, match="without a passphrase"):
        check_signing_key(locked)
    key.chmod(0o644)
    with pytest.raises(TrustError, match="readable by others"):
        check_signing_key(key)
