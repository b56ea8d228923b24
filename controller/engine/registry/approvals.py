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

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from controller.engine.registry.git import Commit, Git
from controller.engine.registry.trust import Signature, SignatureState

TRAILER = "Qmlops-Approve"
EXPIRES_TRAILER = "Qmlops-Approve-Expires"
_VALUE = re.compile(
    r"^(?P<ns>[a-z0-9-]+)/(?P<name>[a-z0-9-]+)@(?P<version>[1-9][0-9]*)(?:\s+(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_EMAIL = re.compile(r"<([^<>\s]+)>")


class Reason(StrEnum):
    """Why an approval does not count (``COUNTS`` when it does)."""

    COUNTS = "counts"
    CONTROLLER = "controller"
    NOT_AN_APPROVER = "not-an-approver"
    UNKNOWN_VERSION = "unknown-version"
    WRONG_DIGEST = "wrong-digest"
    SELF_APPROVAL = "self-approval"
    EXPIRED = "expired"
    UNSIGNED = "unsigned"
    UNKNOWN_SIGNER = "unknown-signer"
    NOT_CHECKED = "signature-not-checked"


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
    why: Reason = Reason.COUNTS
    expires: str | None = None


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
    version_digest: str | None = None,
    spec_author: str | None = None,
    now: datetime | None = None,
) -> Approval:
    """Whether one approval trailer counts, with the reason when it does not. ``signature``: what the
    allowed signers say of the commit (None: no allowed-signers file, nothing could be checked);
    ``version_digest``: the digest the version was registered with, which the approval must be bound
    to (the trailer names it, or the commit's tree holds exactly that manifest); ``spec_author``: under
    ``separationOfDuties``, who authored the spec change that trained the version; ``now``: against
    the commit's ``Qmlops-Approve-Expires``."""
    author = commit.author_email.lower()
    signed = signature is not None and signature.state is not SignatureState.EXEMPT and signature.by(author)
    expires = next(iter(commit.trailer(EXPIRES_TRAILER)), None)

    def result(why: Reason, reason: str) -> Approval:
        counts = why is Reason.COUNTS
        return Approval(commit.sha, author, version, signed, counts, reason, commit.date, why, expires)

    if author == controller_email.lower():
        return result(Reason.CONTROLLER, "the controller cannot approve")
    if author not in {a.lower() for a in approvers}:
        return result(Reason.NOT_AN_APPROVER, f"{author} is not listed in governance.approvers")
    named = _named_digest(commit, version_path, version)
    if named is not None and version_digest is not None and named != version_digest:
        return result(
            Reason.WRONG_DIGEST, f"it names digest {named[:19]}…, version {version} is {version_digest[:19]}…"
        )
    if named is None:
        seen = git.show(commit.sha, version_path)
        if seen is None:
            return result(Reason.UNKNOWN_VERSION, f"version {version} did not exist in commit {commit.short}")
        if version_digest is not None and _manifest_digest(seen) != version_digest:
            return result(
                Reason.WRONG_DIGEST,
                f"the version {version} in commit {commit.short} is not the one registered ({version_digest[:19]}…)",
            )
    if spec_author is not None and _email(spec_author) == author:
        return result(
            Reason.SELF_APPROVAL,
            f"governance.separationOfDuties: {author} authored the spec change that trained version {version}",
        )
    if expires is not None:
        try:
            moment = datetime.fromisoformat(expires.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        except ValueError:
            return result(Reason.EXPIRED, f"{EXPIRES_TRAILER} {expires[:40]!r} is not an ISO 8601 time")
        if now is not None and moment <= now:
            return result(Reason.EXPIRED, f"expired at {expires}")
    if require_signed and not signed:
        kind = Reason.UNSIGNED
        if signature is None:
            kind, why = (
                Reason.NOT_CHECKED,
                "not checked: no allowed-signers file is configured, so no signature can be trusted",
            )
        elif signature.state is SignatureState.EXEMPT:
            why = "from before --signed-since, when approvals were not signed"
        else:
            why = signature.describe(author)
            if signature.state is not SignatureState.UNSIGNED:
                kind = Reason.UNKNOWN_SIGNER
        return result(kind, f"signature required: commit {commit.short} is {why}")
    return result(Reason.COUNTS, "counts")


def _named_digest(commit: Commit, version_path: str, version: int) -> str | None:
    """The digest the commit's trailer names for this version (``ns/name@N sha256:…``), if any."""
    parts = version_path.split("/")
    model = f"{parts[-4]}/{parts[-3]}" if len(parts) >= 4 else ""
    for value in commit.trailer(TRAILER):
        match = _VALUE.match(value.strip())
        if match and match["digest"] and f"{match['ns']}/{match['name']}" == model and int(match["version"]) == version:
            return match["digest"]
    return None


def _manifest_digest(raw: bytes) -> str | None:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return str(data.get("digest")) if isinstance(data, dict) else None


def _email(text: str) -> str:
    found = _EMAIL.search(text)
    return (found[1] if found else text).strip().lower()
