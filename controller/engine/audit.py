"""The audit: a model's verified timeline, read from Git history.

:func:`timeline` puts together who changed the spec, which commit trained which version on which
backend with which data, the gate results, approvals, promotions, rollbacks and blocks.
:func:`verify` checks that history could not have been rewritten unnoticed:

- every ledger entry chains to the one before and matches its digest;
- every version manifest matches its digest and the digest its ``registered`` entry recorded;
- every commit that touched a ledger or a version is the controller's (its author), appended exactly
  one entry to the ledger (never edited or removed one), names that entry in its trailers, and added
  version files without ever changing or deleting one, except the commit of a ``retired`` entry, which
  removes exactly the file of the version it retires (``retention.maxVersions``; history keeps it);
- a retired version's file stays out of HEAD, and the champion is never a retired version.

Problems name the entry (or file) and the commit that broke it, earliest first.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.engine.decisions import LedgerKind
from controller.engine.pipelines.runs import runs_of
from controller.engine.registry import versions as version_files
from controller.engine.registry.approvals import TRAILER as APPROVE_TRAILER
from controller.engine.registry.approvals import judge
from controller.engine.registry.git import Commit, GitIdentity
from controller.engine.registry.ledger import (
    LEDGER_FILE,
    Entry,
    Ledger,
    check_chain,
    entry_from_json,
    format_time,
    parse_time,
)
from controller.engine.registry.store import TRAILER_DECISION, TRAILER_ENTRY, TRAILER_MODEL, Registry, RegistryError
from controller.engine.registry.versions import Version, VersionError


@dataclass(frozen=True)
class VerifyProblem:
    """One way a model's history is broken."""

    model: str
    path: str
    what: str  # "ledger entry 3 (promoted version 1)", "version 2", "commit history"
    message: str
    commit: Commit | None = None

    def format(self) -> str:
        who = (
            f"; broken by commit {self.commit.short} ({self.commit.author_name} <{self.commit.author_email}>, {self.commit.date})"
            if self.commit
            else ""
        )
        return f"{self.path}: {self.what}: {self.message}{who}"

    def to_json(self) -> dict[str, Any]:
        commit = None
        if self.commit:
            commit = {
                "sha": self.commit.sha,
                "author": f"{self.commit.author_name} <{self.commit.author_email}>",
                "date": self.commit.date,
            }
        return {"model": self.model, "path": self.path, "what": self.what, "message": self.message, "commit": commit}


@dataclass
class Verification:
    problems: list[VerifyProblem] = field(default_factory=list)
    entries: int = 0
    versions: int = 0
    commits: int = 0
    signatures: str = "not checked"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "signatures": self.signatures,
            "entries": self.entries,
            "versions": self.versions,
            "commits": self.commits,
            "problems": [p.to_json() for p in self.problems],
        }


# --- verification --------------------------------------------------------------------------------


def verify(registry: Registry, namespace: str, name: str, identity: GitIdentity) -> Verification:
    """Every check on one model's ledger, versions and the commits that wrote them."""
    result = Verification()
    model = f"{namespace}/{name}"
    result.signatures = _signatures(registry)
    try:
        history = _history_problems(registry, namespace, name, identity, result)
        content = _content_problems(registry, namespace, name, result)
        approvals = _approval_problems(registry, namespace, name)
    except RegistryError as err:  # a forged path (a symlinked folder...): tampering, not a crash
        return Verification([VerifyProblem(model, registry.model_path(namespace, name), "registry", str(err))])
    result.problems = _earliest_first(registry, content + history + approvals)
    return result


def _signatures(registry: Registry) -> str:
    trust = registry.trust
    if trust.signers is None:
        return "not checked (no allowed-signers file was given)"
    since = f", required after commit {trust.signed_since[:12]}" if trust.signed_since else ""
    return f"checked against {trust.signers.source}{since}"


def _earliest_first(registry: Registry, problems: list[VerifyProblem]) -> list[VerifyProblem]:
    """Problems ordered by when the commit that caused them was made (unknown commits last)."""
    order = {c.sha: i for i, c in enumerate(registry.git.log(reverse=True))}
    unique: dict[tuple[str, str, str], VerifyProblem] = {}
    for p in problems:
        unique.setdefault((p.path, p.what, p.message), p)
    return sorted(unique.values(), key=lambda p: order.get(p.commit.sha, len(order)) if p.commit else len(order) + 1)


def _blame(registry: Registry, path: str, line: int) -> Commit | None:
    done = registry.git.run("blame", "--porcelain", "-L", f"{line},{line}", "HEAD", "--", path, check=False)
    if done.returncode != 0 or not done.stdout:
        return None
    sha = done.stdout.split()[0]
    found = registry.git.log(sha, extra=["-1"])
    return found[0] if found else None


def _last_commit(registry: Registry, path: str) -> Commit | None:
    found = registry.git.log(paths=[path], extra=["-1"])
    return found[0] if found else None


def _content_problems(registry: Registry, namespace: str, name: str, result: Verification) -> list[VerifyProblem]:
    model = f"{namespace}/{name}"
    ledger_path = registry.ledger_path(namespace, name)
    text = (registry.git.show("HEAD", ledger_path) or b"").decode("utf-8", errors="replace")
    problems: list[VerifyProblem] = []
    entries: list[Entry] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        try:
            entries.append(entry_from_json(json.loads(raw), number))
        except (ValueError, json.JSONDecodeError):
            continue
    result.entries = len(entries)
    for line, entry, message in check_chain(text):
        what = f"ledger entry {entry.seq} ({entry.kind})" if entry else f"ledger line {line}"
        if entry is not None and entry.version is not None:
            what = f"ledger entry {entry.seq} ({entry.kind} version {entry.version})"
        problems.append(VerifyProblem(model, ledger_path, what, message, _blame(registry, ledger_path, line)))
    registered: dict[int, Entry] = {
        e.version: e for e in entries if e.kind == LedgerKind.REGISTERED and e.version is not None
    }
    folder = f"{registry.model_path(namespace, name)}/{version_files.VERSIONS_DIR}/"
    files = [p for p in registry.git.out("ls-tree", "-r", "--name-only", "HEAD", "--", folder).splitlines() if p]
    seen: set[int] = set()
    for path in files:
        found = version_files.number_of(path)
        if found is None:
            continue
        result.versions += 1
        seen.add(found)
        problems.extend(_version_problems(registry, model, path, found, registered.get(found)))
    retired = {e.version: e for e in entries if e.kind == LedgerKind.RETIRED and e.version is not None}
    for number, gone in retired.items():
        path = f"{registry.model_path(namespace, name)}/{version_files.file_name(number)}"
        if number in seen:
            message = f"retired in ledger entry {gone.seq} but its file is back in HEAD"
            problems.append(VerifyProblem(model, path, f"version {number}", message, _last_commit(registry, path)))
        if number not in registered or registered[number].seq > gone.seq:
            message = f"ledger entry {gone.seq} retires a version that was not registered before it"
            problems.append(VerifyProblem(model, ledger_path, f"version {number}", message, None))
    champion = Ledger(tuple(entries)).champion()
    if champion is not None and champion in retired:
        message = f"is the champion but ledger entry {retired[champion].seq} retired it"
        problems.append(VerifyProblem(model, ledger_path, f"version {champion}", message, None))
    for number, entry in registered.items():
        if number not in seen and number not in retired:
            path = f"{registry.model_path(namespace, name)}/{version_files.file_name(number)}"
            problems.append(
                VerifyProblem(
                    model,
                    path,
                    f"version {number}",
                    f"registered in ledger entry {entry.seq} but the file is missing",
                    _last_commit(registry, path),
                )
            )
    return problems


def _version_problems(
    registry: Registry, model: str, path: str, number: int, entry: Entry | None
) -> list[VerifyProblem]:
    raw = registry.git.show("HEAD", path) or b""
    culprit = _last_commit(registry, path)
    what = f"version {number}"
    try:
        version = version_files.decode(raw, path)
    except VersionError as err:
        return [VerifyProblem(model, path, what, str(err).removeprefix(f"{path}: "), culprit)]
    out: list[VerifyProblem] = []
    if version.number != number:
        out.append(VerifyProblem(model, path, what, f"the file holds version {version.number}", culprit))
    if entry is None:
        out.append(VerifyProblem(model, path, what, "no ledger entry registered it", culprit))
    elif entry.data.get("versionDigest") != version.digest:
        out.append(
            VerifyProblem(
                model,
                path,
                what,
                f"digest {version.digest[:19]}… differs from the {entry.data.get('versionDigest', '?')[:19]}… that ledger entry {entry.seq} registered (rewritten)",
                culprit,
            )
        )
    problem = _artifact_problem(version)
    if problem:
        out.append(VerifyProblem(model, path, what, problem, culprit))
    return out


def _artifact_problem(version: Version) -> str | None:
    """The training artifact inside the manifest must still match its own digest."""
    recorded = version.artifact.get("digest")
    if recorded is not None and recorded != version.artifact_digest:
        return f"artifact digest {str(recorded)[:19]}… differs from the manifest's artifactDigest"
    training = importlib.import_module("controller.engine.training")  # loads Qiskit: only when verifying
    try:
        loaded = training.ModelArtifact.from_json(json.dumps(version.artifact).encode())
    except Exception as err:
        return f"the training artifact does not load: {err}"
    if loaded.digest != version.artifact_digest:
        return f"the training artifact's digest {loaded.digest[:19]}… differs from artifactDigest"
    return None


def _history_problems(
    registry: Registry, namespace: str, name: str, identity: GitIdentity, result: Verification
) -> list[VerifyProblem]:
    """The model's folder through its whole history, in one ``git log --raw`` pass: who changed it
    (the controller's key signed every commit, when an allowed-signers file is given), that versions
    were only ever added as real files, that the ledger was never deleted, and that the commits that
    changed the ledger recorded its entries one by one, in order. Only when that sequence does not
    match are the ledger's contents read commit by commit, to name the commit that rewrote it."""
    model = f"{namespace}/{name}"
    folder = registry.model_path(namespace, name)
    ledger_path = f"{folder}/{LEDGER_FILE}"
    versions_prefix = f"{folder}/{version_files.VERSIONS_DIR}/"
    problems: list[VerifyProblem] = []
    log = registry.git.log_changes(paths=[folder])
    retiring = {  # the digest of each retired entry -> the version file its commit may remove
        e.digest: f"{folder}/{version_files.file_name(e.version)}"
        for e in registry.ledger(namespace, name, strict=False).of_kind(LedgerKind.RETIRED)
        if e.version is not None
    }
    trust = registry.trust
    signatures = trust.signatures(registry.git, [c.sha for c, _ in log]) if trust.checked else {}
    ledger_commits: list[Commit] = []
    for commit, changes in log:
        if trust.checked and changes and not signatures[commit.sha].by(identity.email):
            why = signatures[commit.sha].describe(identity.email)
            problems.append(
                VerifyProblem(
                    model, changes[0].path, "commit history", f"not signed by the controller's key: {why}", commit
                )
            )
        guarded = [c for c in changes if c.path == ledger_path or c.path.startswith(versions_prefix)]
        if not guarded:
            continue
        result.commits += 1
        if commit.author_email.lower() != identity.email.lower():
            problems.append(
                VerifyProblem(
                    model,
                    guarded[0].path,
                    "commit history",
                    f"changed by someone other than the controller ({identity})",
                    commit,
                )
            )
        retires = {retiring[d] for d in commit.trailer(TRAILER_ENTRY) if d in retiring}
        for change in guarded:
            if change.status == "D" and change.path in retires and len(commit.trailer(TRAILER_ENTRY)) == 1:
                continue  # a retirement: the one file of the version its retired entry names
            if change.path.startswith(versions_prefix) and change.status != "A":
                verb = {"M": "modified", "D": "deleted", "T": "replaced"}.get(
                    change.status, f"changed ({change.status})"
                )
                message = f"version file {verb}: versions are immutable"
                problems.append(VerifyProblem(model, change.path, "commit history", message, commit))
            elif change.symlink and change.status != "D":
                message = "added as a symlink (tampering: the registry holds only real files)"
                problems.append(VerifyProblem(model, change.path, "commit history", message, commit))
            if change.path == ledger_path:
                if change.status == "D":
                    message = "the ledger was deleted: the model's decisions disappeared from HEAD"
                    problems.append(VerifyProblem(model, ledger_path, "commit history", message, commit))
                else:
                    ledger_commits.append(commit)
    if not _recorded_in_order(registry, namespace, name, ledger_commits):
        found = [p for c in ledger_commits for p in _ledger_commit_problems(registry, model, ledger_path, c)]
        if not found and not any(p.path == ledger_path for p in problems):
            message = "the commits that changed the ledger do not record its entries one by one, in order"
            found.append(VerifyProblem(model, ledger_path, "commit history", message, None))
        problems.extend(found)
    return problems


def _recorded_in_order(registry: Registry, namespace: str, name: str, commits: list[Commit]) -> bool:
    """Whether each commit that changed the ledger names exactly one entry, and those are the
    ledger's entries at HEAD, in order: then no commit edited or dropped an entry."""
    ledger = registry.ledger(namespace, name, strict=False)
    named = [c.trailer(TRAILER_ENTRY) for c in commits]
    return all(len(n) == 1 for n in named) and [n[0] for n in named] == [e.digest for e in ledger.entries]


def _approval_problems(registry: Registry, namespace: str, name: str) -> list[VerifyProblem]:
    """With an allowed-signers file: every approval the ledger counted was signed by its approver."""
    if not registry.trust.checked:
        return []
    model = f"{namespace}/{name}"
    path = registry.ledger_path(namespace, name)
    entries = registry.ledger(namespace, name, strict=False).of_kind(LedgerKind.APPROVED)
    shas = [str(e.data.get("commit")) for e in entries]
    signatures = registry.trust.signatures(registry.git, shas)
    problems = []
    for entry, sha in zip(entries, shas, strict=True):
        approver = str(entry.data.get("approver", ""))
        if not signatures[sha].by(approver):
            message = f"counts approval commit {sha[:12]}, which is {signatures[sha].describe(approver)}"
            problems.append(VerifyProblem(model, path, f"ledger {entry.describe()}", message, None))
    return problems


def _ledger_commit_problems(registry: Registry, model: str, path: str, commit: Commit) -> list[VerifyProblem]:
    before = registry.git.show(f"{commit.sha}^", path) or b""
    after = registry.git.show(commit.sha, path) or b""
    if not after.startswith(before):
        return [
            VerifyProblem(
                model,
                path,
                "commit history",
                "the ledger was edited, not appended to (an earlier entry changed or disappeared)",
                commit,
            )
        ]
    added = after[len(before) :].decode("utf-8", errors="replace").splitlines()
    if len(added) != 1:
        return [
            VerifyProblem(
                model,
                path,
                "commit history",
                f"appended {len(added)} ledger entries; each decision is one commit",
                commit,
            )
        ]
    try:
        entry = entry_from_json(json.loads(added[0]), 0)
    except (ValueError, json.JSONDecodeError):
        return [VerifyProblem(model, path, "commit history", "appended a line that is not a ledger entry", commit)]
    what = f"ledger entry {entry.seq} ({entry.kind})"
    expected = {TRAILER_MODEL: model, TRAILER_DECISION: entry.kind, TRAILER_ENTRY: entry.digest}
    for key, value in expected.items():
        if value not in commit.trailer(key):
            return [VerifyProblem(model, path, what, f"its commit's {key} trailer does not say {value}", commit)]
    return []


# --- the timeline --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One line of a model's timeline."""

    at: str
    kind: str
    message: str
    version: int | None = None
    commit: str | None = None
    by: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "kind": self.kind,
            "version": self.version,
            "message": self.message,
            "commit": self.commit,
            "by": self.by,
            "data": self.data,
        }


@dataclass(frozen=True)
class RetiredVersion:
    """A version retired under ``retention.maxVersions``: its file left HEAD (history keeps it), so what
    the audit shows of it is what its ``registered`` entry recorded, and the entry (and commit) that
    retired it."""

    number: int
    digest: str
    registered_at: str
    metrics: dict[str, Any]
    backend: str | None
    source: dict[str, Any]
    retired_at: str
    entry: int  # the seq of the ``retired`` ledger entry
    commit: str | None  # the commit that recorded it (and removed the file)
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.number,
            "digest": self.digest,
            "registeredAt": self.registered_at,
            "metrics": self.metrics,
            "backend": self.backend,
            "source": self.source,
            "retired": {"at": self.retired_at, "entry": self.entry, "commit": self.commit, "message": self.message},
        }

    def describe(self) -> str:
        commit = f" (commit {self.commit[:12]})" if self.commit else ""
        return f"retired by ledger entry {self.entry}{commit}"


def retired_versions(registry: Registry, namespace: str, name: str, ledger: Ledger) -> list[RetiredVersion]:
    """Every version a ``retired`` entry took out of HEAD, from its ``registered`` entry."""
    gone = [e for e in ledger.of_kind(LedgerKind.RETIRED) if e.version is not None]
    if not gone:
        return []
    registered = {e.version: e for e in ledger.of_kind(LedgerKind.REGISTERED)}
    commits = registry.entry_commits(namespace, name)
    out = []
    for entry in gone:
        assert entry.version is not None
        born = registered.get(entry.version)
        data = born.data if born is not None else {}
        metrics = data.get("metrics")
        source = data.get("source")
        commit = commits.get(entry.digest)
        out.append(
            RetiredVersion(
                number=entry.version,
                digest=str(entry.data.get("versionDigest") or data.get("versionDigest") or ""),
                registered_at=born.at if born is not None else "",
                metrics=dict(metrics) if isinstance(metrics, dict) else {},
                backend=str(data["backend"]) if data.get("backend") else None,
                source=dict(source) if isinstance(source, dict) else {},
                retired_at=entry.at,
                entry=entry.seq,
                commit=commit.sha if commit else None,
                message=entry.message,
            )
        )
    return sorted(out, key=lambda r: r.number)


@dataclass
class ModelAudit:
    namespace: str
    name: str
    spec_paths: list[str]
    events: list[Event]
    versions: list[Version]
    champion: int | None
    model_card: dict[str, Any] | None = None
    spec: dict[str, Any] | None = None
    verification: Verification | None = None
    ledger: Ledger = field(default_factory=Ledger)
    # controller.engine.policy.Effective: the QuantumPolicy floors under the spec at HEAD, and whose
    # (the same values plan and status.policy.floors show); None: the model has no spec at HEAD
    policy: Any = None
    policies_given: bool = False  # whether QuantumPolicies were given (--policies) to judge it by
    retired: list[RetiredVersion] = field(default_factory=list)  # versions retention took out of HEAD

    def evaluations(self, version: int) -> list[dict[str, Any]]:
        """Each ``evaluated`` entry of ``version``: where, with which figures, when (and which run)."""
        out = []
        for entry in self.ledger.for_version(version, LedgerKind.EVALUATED):
            item = {
                "backend": entry.data.get("backend"),
                "metrics": entry.data.get("metrics") or {},
                "at": entry.at,
                "calibration": entry.data.get("calibration"),
                "run": (entry.data.get("pipeline") or {}).get("run"),
            }
            out.append({k: v for k, v in item.items() if v is not None})
        return out

    def runs(self) -> list[dict[str, Any]]:
        """Every pipeline run of this model: its cells x backends with the figures, the selected version."""
        pipelines = sorted({e.pipeline for e in self.ledger.entries if e.pipeline})
        out = []
        for pipeline in pipelines:
            for run in runs_of(self.ledger, pipeline):
                selected = next((e.version for e in run.entries if e.kind == LedgerKind.SELECTED), None)
                cells = []
                for step in run.steps.values():
                    labels = step.outputs.get("labels") or {}
                    for cell, version in (step.outputs.get("cells") or {}).items():
                        scores = {
                            str(e.data.get("backend")): e.data.get("metrics") or {}
                            for e in run.entries
                            if e.kind == LedgerKind.EVALUATED and e.version == version
                        }
                        if not scores:  # evaluated in an earlier run and reused: the newest figures
                            scores = {str(ev["backend"]): ev["metrics"] for ev in self.evaluations(int(version))}
                        cells.append(
                            {
                                "cell": cell,
                                "label": labels.get(cell, cell),
                                "version": version,
                                "cached": cell in (step.outputs.get("cached") or {}),
                                "scores": scores,
                            }
                        )
                out.append(
                    {
                        "pipeline": pipeline,
                        "id": run.id,
                        "cause": run.cause,
                        "reason": run.reason,
                        "revision": run.revision,
                        "phase": run.phase.value,
                        "started": run.started,
                        "finished": run.finished,
                        "steps": {n: {"phase": r.phase.value, "message": r.message} for n, r in run.steps.items()},
                        "cells": cells,
                        "selected": selected,
                    }
                )
        return out

    @property
    def model(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "specPaths": self.spec_paths,
            "champion": self.champion,
            "modelCard": self.model_card,
            "versions": self.versions_json(),
            "runs": self.runs(),
            "timeline": [e.to_json() for e in self.events],
            "verification": self.verification.to_json() if self.verification else None,
            "policy": self.policy_json(),
        }

    def versions_json(self) -> list[dict[str, Any]]:
        """Every version ever registered, by number: those in HEAD (``retired`` null) and those retired."""
        rows = [
            (v.number, {**_version_summary(v), "retired": None, "evaluations": self.evaluations(v.number)})
            for v in self.versions
        ]
        rows += [(r.number, {**r.to_json(), "evaluations": self.evaluations(r.number)}) for r in self.retired]
        return [row for _, row in sorted(rows, key=lambda item: item[0])]

    def policy_json(self) -> dict[str, Any] | None:
        """The effective policy: which QuantumPolicies matched and each value they set (None: no spec)."""
        if self.policy is None:
            return None
        return {
            "policiesGiven": self.policies_given,
            "matched": list(self.policy.policies),
            "floors": [source.to_json() for source in self.policy.sources],
        }

    def policy_lines(self) -> list[str]:
        """The effective policy in words, one line each (the table and the HTML report)."""
        if self.policy is None:
            return []
        if not self.policies_given:
            return ["QuantumPolicies: none given (--policies DIR): the spec's own values apply"]
        if not self.policy.policies:
            return ["QuantumPolicies: none matches this model: the spec's own values apply"]
        lines = [f"QuantumPolicies: {', '.join(self.policy.policies)}"]
        lines += [f"floor: {s.field}: {s.text} (QuantumPolicy/{s.policy})" for s in self.policy.sources]
        if not self.policy.sources:
            lines.append("the spec is at least as strict as every floor")
        return lines


def _version_summary(version: Version) -> dict[str, Any]:
    lineage = version.lineage
    return {
        "version": version.number,
        "digest": version.digest,
        "registeredAt": version.registered_at,
        "metrics": version.scalar_metrics(),
        "backend": version.backend,
        "source": version.source,
        "specDigest": version.spec_digest,
        "datasetDigest": version.dataset_digest,
        "usage": version.usage,
        "lineage": lineage,
        "pipeline": version.pipeline,
    }


def spec_events(registry: Registry, paths: Iterable[str]) -> list[Event]:
    events: list[Event] = []
    for path in paths:
        for commit in registry.git.log(paths=[path], follow=True):
            if commit.author_email.lower() == registry.identity.email.lower():
                continue
            events.append(
                Event(
                    _utc(commit.date),
                    "spec-changed",
                    f"{path}: {commit.subject}",
                    commit=commit.sha,
                    by=f"{commit.author_name} <{commit.author_email}>",
                )
            )
    return events


def ledger_events(registry: Registry, namespace: str, name: str) -> list[Event]:
    commits = registry.entry_commits(namespace, name)
    events: list[Event] = []
    for entry in registry.ledger(namespace, name, strict=False).entries:
        commit = commits.get(entry.digest)
        by = None
        if entry.kind == LedgerKind.APPROVED:
            by = str(entry.data.get("approver"))
        elif commit is not None:
            by = f"{commit.author_name} <{commit.author_email}>"
        events.append(
            Event(entry.at, entry.kind, entry.message, entry.version, commit.sha if commit else None, by, entry.data)
        )
    return events


def approval_events(
    registry: Registry, namespace: str, name: str, ledger: Ledger, spec: dict[str, Any] | None
) -> list[Event]:
    """Approval commits that the ledger did not record, with the reason, so that an auditor sees them too."""
    governance = ((spec or {}).get("spec") or {}).get("governance") or {}
    recorded = ledger.approval_commits()
    registered = {e.version: e.data.get("versionDigest") for e in ledger.of_kind(LedgerKind.REGISTERED)}
    versions = {
        v.number: v for v in registry.versions(namespace, name, strict=False) if registered.get(v.number) == v.digest
    }
    events: list[Event] = []
    for commit, ns, model, version in registry.approval_trailers():
        if (ns, model) != (namespace, name) or commit.sha in recorded:
            continue
        approved = versions.get(version)
        judged = judge(
            registry.git,
            commit,
            version=version,
            version_path=registry.version_path(ns, model, version),
            approvers=list(governance.get("approvers") or []),
            require_signed=bool(governance.get("requireSignedApprovals")) or registry.trust.checked,
            controller_email=registry.identity.email,
            signature=registry.signature(commit),
            version_digest=approved.digest if approved else None,
            spec_author=str(approved.source.get("author") or "")
            if approved and governance.get("separationOfDuties")
            else None,
            now=_utc_now(),
        )
        value = f"{APPROVE_TRAILER}: {ns}/{model}@{version}"
        if judged.counts and judged.approver in ledger.approvers(version):
            kind, message = "approval-repeated", f"{value}: {judged.approver} had approved version {version} already"
        elif judged.counts:
            kind, message = "approval-pending", f"{value}: counts; the next run records it"
        else:
            kind, message = "approval-not-counted", f"{value}: not counted: {judged.reason}"
        # the reason as a label (unsigned, unknown-signer, not-an-approver, self-approval, expired, ...)
        data = {"reason": str(judged.why)}
        events.append(Event(_utc(commit.date), kind, message, version, commit.sha, commit.author_email, data))
    return events


def model_audit(
    registry: Registry,
    namespace: str,
    name: str,
    *,
    spec_paths: list[str],
    spec: dict[str, Any] | None = None,
    policy: Any = None,
    policies_given: bool = False,
) -> ModelAudit:
    """``policy``: the effective policy of the spec at HEAD (``controller.engine.policy.effective``)."""
    card = (spec or {}).get("spec", {}).get("modelCard") if spec else None
    try:
        ledger = registry.ledger(namespace, name, strict=False)
        events = spec_events(registry, spec_paths) + ledger_events(registry, namespace, name)
        events += approval_events(registry, namespace, name, ledger, spec)
        found = registry.versions(namespace, name, strict=False)
    except RegistryError as err:  # e.g. a symlink planted in the registry: --verify reports it as tampering
        unreadable = Event(format_time(datetime.now(UTC)), "unreadable", str(err))
        return ModelAudit(
            namespace, name, spec_paths, [unreadable], [], None, model_card=card, spec=spec, policy=policy,
            policies_given=policies_given,
        )  # fmt: skip
    events.sort(key=lambda e: _utc(e.at))
    try:
        retired = retired_versions(registry, namespace, name, ledger)
    except RegistryError:
        retired = []
    return ModelAudit(
        namespace,
        name,
        spec_paths,
        events,
        found,
        ledger.champion(),
        model_card=card,
        spec=spec,
        ledger=ledger,
        policy=policy,
        policies_given=policies_given,
        retired=retired,
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _utc(text: str) -> str:
    """A Git date (``2025-06-01T12:00:00+02:00``) as the registry writes times (UTC, with a Z)."""
    try:
        return format_time(parse_time(text))
    except ValueError:
        return text


def spec_paths_from_versions(registry: Registry, namespace: str, name: str) -> list[str]:
    try:
        found = registry.versions(namespace, name, strict=False)
    except RegistryError:
        return []
    paths = {str(v.source.get("path")) for v in found if v.source.get("path")}
    return sorted(p for p in paths if (Path(registry.repo) / p).exists() or registry.git.log(paths=[p], extra=["-1"]))
