"""Git-native approvals: an approver approves a version with a commit.

The commit is authored by the approver and carries the trailer ``Qmlops-Approve: <namespace>/<model>@<N>``
(several trailers approve several versions). It counts when

- its author's email is listed in the spec's ``governance.approvers`` (case-insensitive);
- version N's manifest is in the commit's tree: the approver approved the immutable version they saw;
- it is not the controller's own commit;
- with ``governance.requireSignedApprovals``, ``git verify-commit`` accepts its signature and the signer
  is the author (SSH signing with an allowed-signers file works without gpg).

Each counted approval is recorded once in the ledger; the count is of distinct approvers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from controller.engine.registry.git import Commit, Git

TRAILER = "Qmlops-Approve"
_VALUE = re.compile(r"^(?P<ns>[a-z0-9-]+)/(?P<name>[a-z0-9-]+)@(?P<version>[1-9][0-9]*)$")
_EMAIL_IN = re.compile(r"<([^<>\s]+)>")


@dataclass(frozen=True)
class Approval:
    """One approval trailer found in history, with whether it counts and why not."""

    commit: str
    approver: str
    version: int
    signed: bool
    counts: bool
    reason: str
    date: str


def approval_trailers(git: Git) -> list[tuple[Commit, str, str, int]]:
    """(commit, namespace, name, version) for every approval trailer reachable from HEAD, oldest first."""
    if git.head() is None:
        return []
    commits = git.log("HEAD", reverse=True, extra=["-i", f"--grep=^{TRAILER}:"])
    out: list[tuple[Commit, str, str, int]] = []
    for commit in commits:
        for value in commit.trailer(TRAILER):
            match = _VALUE.match(value.strip())
            if match:
                out.append((commit, match["ns"], match["name"], int(match["version"])))
    return out


def signer_email(commit: Commit) -> str:
    """The signer's email: the SSH principal as the allowed-signers file names it, or the email in a
    gpg user id."""
    found = _EMAIL_IN.search(commit.signer)
    return (found[1] if found else commit.signer.strip()).lower()


def judge(
    git: Git,
    commit: Commit,
    *,
    version: int,
    version_path: str,
    approvers: list[str],
    require_signed: bool,
    controller_email: str,
) -> Approval:
    """Whether one approval trailer counts, with the reason when it does not."""
    author = commit.author_email.lower()
    signed = commit.signature == "G" and signer_email(commit) == author

    def result(counts: bool, reason: str) -> Approval:
        return Approval(commit.sha, author, version, signed, counts, reason, commit.date)

    if author == controller_email.lower():
        return result(False, "the controller cannot approve")
    if author not in {a.lower() for a in approvers}:
        return result(False, f"{author} is not listed in governance.approvers")
    if not git.exists(commit.sha, version_path):
        return result(False, f"version {version} did not exist in commit {commit.short}")
    if require_signed and not signed:
        why = "unsigned" if commit.signature == "N" else f"signature not accepted (git says {commit.signature})"
        if commit.signature == "G":
            why = f"signed by {signer_email(commit) or 'someone else'}, not by the author"
        return result(False, f"governance.requireSignedApprovals: commit {commit.short} is {why}")
    return result(True, "counts")
