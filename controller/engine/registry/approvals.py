"""Git-native approvals: an approver approves a version with a commit.

The commit is authored by the approver and carries the trailer ``Qmlops-Approve: <namespace>/<model>@<N>``
(several trailers approve several versions). It counts when

- its author's email is listed in the spec's ``governance.approvers`` (case-insensitive);
- version N's manifest is in the commit's tree: the approver approved the immutable version they saw;
- it is not the controller's own commit;
- with ``governance.requireSignedApprovals``, or whenever an allowed-signers file is configured, its
  SSH signature verifies with a key the allowed-signers file lists for the author's email
  (:mod:`.trust`); without a file no signature can be checked, so a required one never counts.

Each counted approval is recorded once in the ledger; the count is of distinct approvers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from controller.engine.registry.git import Commit, Git
from controller.engine.registry.trust import Signature, SignatureState

TRAILER = "Qmlops-Approve"
_VALUE = re.compile(r"^(?P<ns>[a-z0-9-]+)/(?P<name>[a-z0-9-]+)@(?P<version>[1-9][0-9]*)$")


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


def judge(
    git: Git,
    commit: Commit,
    *,
    version: int,
    version_path: str,
    approvers: list[str],
    require_signed: bool,
    controller_email: str,
    signature: Signature | None = None,
) -> Approval:
    """Whether one approval trailer counts, with the reason when it does not. ``signature``: what the
    allowed signers say of the commit (None: no allowed-signers file, nothing could be checked)."""
    author = commit.author_email.lower()
    signed = signature is not None and signature.state is not SignatureState.EXEMPT and signature.by(author)

    def result(counts: bool, reason: str) -> Approval:
        return Approval(commit.sha, author, version, signed, counts, reason, commit.date)

    if author == controller_email.lower():
        return result(False, "the controller cannot approve")
    if author not in {a.lower() for a in approvers}:
        return result(False, f"{author} is not listed in governance.approvers")
    if not git.exists(commit.sha, version_path):
        return result(False, f"version {version} did not exist in commit {commit.short}")
    if require_signed and not signed:
        if signature is None:
            why = "not checked: no allowed-signers file is configured, so no signature can be trusted"
        elif signature.state is SignatureState.EXEMPT:
            why = "from before --signed-since, when approvals were not signed"
        else:
            why = signature.describe(author)
        return result(False, f"signature required: commit {commit.short} is {why}")
    return result(True, "counts")
